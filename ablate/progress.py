"""What `ablate run` shows while it works: a live display on a terminal, plain lines otherwise (CI, logs).

The live display: one bar for the study (done, failed and running counts, elapsed time and
an ETA) and one line per worker (its device, trial, epoch and latest validation accuracy).
"""

from __future__ import annotations

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ablate.design import Trial
from ablate.workers import Slot


class ConsoleReporter:
    def __init__(self, console: Console | None = None):
        self.console = console or Console(highlight=False, soft_wrap=True)  # logs: no wrapping at 80 columns
        self.interactive = self.console.is_terminal
        self.total = self.done = self.failed = 0
        self.workers: dict[int, str] = {}
        self.slots: list[Slot] = []
        self.progress: Progress | None = None
        self.live: Live | None = None
        self.task = None

    def start(self, total: int, skipped: int, slots: list[Slot]) -> None:
        self.close()  # a search starts a second phase (the confirm runs) with its own count
        self.done = self.failed = 0
        self.total, self.slots = total - skipped, slots
        devices = sorted({s.device for s in slots})
        self.console.print(
            f"{total} trials: {skipped} already done, {self.total} to train on "
            f"{len(slots)} worker(s) ({', '.join(devices)}, {slots[0].threads} thread(s) each)"
        )
        self.workers = {s.index: "starting" for s in slots}
        if self.interactive and self.total:
            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("eta"), TimeRemainingColumn(), console=self.console,
            )
            self.task = self.progress.add_task(self._overall(), total=self.total)
            self.live = Live(self._render(), console=self.console, refresh_per_second=4, transient=True)
            self.live.start()

    def trial_started(self, trial: Trial, slot: Slot) -> None:
        self._worker(slot, f"{trial.stage} seed {trial.seed}")

    def epoch(self, trial: Trial, slot: Slot, epoch: int, val_accuracy: float) -> None:
        self._worker(slot, f"{trial.stage} seed {trial.seed} epoch {epoch}/{trial.settings.train.epochs} "
                           f"val acc {100 * val_accuracy:.2f}%")

    def trial_finished(self, trial: Trial, slot: Slot, outcome: dict[str, float]) -> None:
        self.done += 1
        self._worker(slot, "idle")
        result = outcome.get("summary") or (
            f"test acc {100 * outcome['test_accuracy']:.2f}%  ({outcome['train_seconds']:.1f} s, worker {slot.index})"
        )
        self._line(f"[green]done[/]  {trial.stage} seed {trial.seed} [dim]{trial.hash}[/]  {result}")

    def trial_failed(self, trial: Trial, slot: Slot, reason: str, error: str) -> None:
        self.failed += 1
        self._worker(slot, "idle")
        self._line(f"[red]FAILED[/] ({reason}) {trial.stage} seed {trial.seed} [dim]{trial.hash}[/]  {error}")

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def _overall(self) -> str:
        running = sum(1 for text in self.workers.values() if text not in ("idle", "starting"))
        return f"{self.done} done, {self.failed} failed, {running} running"

    def _render(self) -> Group:
        table = Table.grid(padding=(0, 2))
        for slot in self.slots:
            table.add_row(f"[dim]worker {slot.index}[/]", slot.device, self.workers.get(slot.index, ""))
        return Group(self.progress, table)

    def _worker(self, slot: Slot, text: str) -> None:
        self.workers[slot.index] = text
        self._refresh()

    def _refresh(self) -> None:
        if self.progress is not None:
            self.progress.update(self.task, description=self._overall(), completed=self.done + self.failed)
        if self.live is not None:
            self.live.update(self._render())

    def _line(self, text: str) -> None:
        finished = self.done + self.failed
        self.console.print(f"[{finished:>{len(str(self.total))}}/{self.total}] {text}")
        self._refresh()
