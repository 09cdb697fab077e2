"""`ablate run`'s progress: a live display on a terminal, plain lines otherwise (CI, logs) — one bar for the study
(done, failed and running counts, elapsed time and an ETA from finished trials' durations) and one line per
worker (its device, trial, epoch and latest validation accuracy)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from ablate.design import Trial
    from ablate.run import Outcome, Slot


def print_failures(console: Console, failed: list[tuple[Trial, str, str]]) -> None:
    for trial, reason, error in failed:
        console.print(f"[red]FAILED[/] ({reason}) {trial.stage} seed {trial.seed} ({trial.hash}): {error}")


class TrialTimes:
    """Time left in a run, from how long its finished trials took.

    No guess until a trial has finished: the first seconds (workers starting, data loading, the first epoch)
    say little about the rest, and a rate from them swings wildly. Then each waiting trial is taken to last
    the mean of the finished ones (one slow or fast trial moves it a little), each running trial what is
    left of that mean, and they are shared among the trials that run at once.
    """

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock
        self.started: dict[str, float] = {}  # running trial's hash → when it started
        self.durations: list[float] = []
        self.peak = 0  # most trials seen running at once: a worker training a pack runs several

    def start(self, key: str) -> None:
        self.started[key] = self.clock()
        self.peak = max(self.peak, len(self.started))

    def end(self, key: str, finished: bool) -> None:
        began = self.started.pop(key, None)
        if finished and began is not None:  # a failure's time says nothing about a trial's length
            self.durations.append(self.clock() - began)

    def seconds_left(self, remaining: int, slots: int) -> float | None:
        """Seconds until `remaining` trials (the running ones among them) end on `slots` workers."""
        if not self.durations:
            return None
        mean = sum(self.durations) / len(self.durations)
        now = self.clock()
        free_at = sorted(max(mean - (now - began), 0.0) for began in self.started.values())
        free_at += [0.0] * (max(slots, self.peak, 1) - len(free_at))
        for _ in range(max(remaining - len(self.started), 0)):  # each waiting trial to the first free place
            free_at[0] += mean
            free_at.sort()
        return max(free_at, default=0.0)


class EtaColumn(ProgressColumn):
    """'eta 0:02:10' from TrialTimes, '--:--' before a trial has finished."""

    def __init__(self, seconds_left: Callable[[], float | None]):
        super().__init__()
        self.seconds_left = seconds_left

    def render(self, task) -> Text:
        seconds = self.seconds_left()
        if seconds is None:
            return Text("eta --:--", style="progress.remaining")
        minutes, secs = divmod(round(seconds), 60)
        return Text(f"eta {minutes // 60}:{minutes % 60:02d}:{secs:02d}", style="progress.remaining")


class ConsoleReporter:
    """The run's Reporter (ablate.run's protocol) on a rich console."""

    def __init__(self, console: Console | None = None, clock: Callable[[], float] = time.monotonic):
        self.console = console or Console(highlight=False, soft_wrap=True)  # logs: no wrapping at 80 columns
        self.clock = clock
        self.times = TrialTimes(clock)
        self.interactive = self.console.is_terminal
        self.total = self.done = self.failed = 0
        self.workers: dict[int, str] = {}
        self.slots: list[Slot] = []
        self.progress: Progress | None = None
        self.live: Live | None = None
        self.task = None
        self.shown_notes: list[str] = []  # what `note` printed: the run's end need not print it again

    def start(self, total: int, skipped: int, slots: list[Slot]) -> None:
        self.close()  # a search starts a second phase (the confirm runs) with its own count
        self.done = self.failed = 0
        self.total, self.slots = total - skipped, slots
        self.times = TrialTimes(self.clock)
        devices = sorted({s.device for s in slots})
        self.console.print(
            f"{total} trials: {skipped} already done, {self.total} to train on "
            f"{len(slots)} worker(s) ({', '.join(devices)}, {slots[0].threads} thread(s) each)"
        )
        self.workers = {s.index: "starting" for s in slots}
        if self.interactive and self.total:
            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                EtaColumn(self.eta_seconds), console=self.console, get_time=self.clock,
            )
            self.task = self.progress.add_task(self._overall(), total=self.total)
            self.live = Live(self._render(), console=self.console, refresh_per_second=4, transient=True)
            self.live.start()

    def trial_started(self, trial: Trial, slot: Slot) -> None:
        self.times.start(trial.hash)
        self._worker(slot, f"{trial.stage} seed {trial.seed}")

    def epoch(self, trial: Trial, slot: Slot, epoch: int, val_accuracy: float) -> None:
        self._worker(slot, f"{trial.stage} seed {trial.seed} epoch {epoch}/{trial.settings.train.epochs} "
                           f"val acc {100 * val_accuracy:.2f}%")

    def trial_finished(self, trial: Trial, slot: Slot, outcome: Outcome) -> None:
        self.done += 1
        self.times.end(trial.hash, finished=True)
        self._worker(slot, "idle")
        result = outcome.note or (
            f"test acc {100 * outcome.test_accuracy:.2f}%  ({outcome.train_seconds:.1f} s, worker {slot.index})"
        )
        self._line(f"[green]done[/]  {trial.stage} seed {trial.seed} [dim]{trial.hash}[/]  {result}")

    def trial_failed(self, trial: Trial, slot: Slot, reason: str, error: str) -> None:
        self.failed += 1
        self.times.end(trial.hash, finished=False)
        self._worker(slot, "idle")
        self._line(f"[red]FAILED[/] ({reason}) {trial.stage} seed {trial.seed} [dim]{trial.hash}[/]  {error}")

    def trial_retried(self, trial: Trial, slot: Slot, why: str) -> None:
        """A trial lost with its worker's node, back in the queue (its run stays FAILED, worker-lost)."""
        self.times.end(trial.hash, finished=False)
        self._worker(slot, "lost")
        self._line(f"[yellow]lost[/]  {trial.stage} seed {trial.seed} [dim]{trial.hash}[/]  {why}: training it again")

    def trial_skipped(self, trial: Trial, elsewhere: str) -> None:
        """A trial another invocation claimed first: no longer this run's to train."""
        self.total -= 1
        self.times.end(trial.hash, finished=False)  # it started here, so the ETA counted it as running
        if self.progress is not None:
            self.progress.update(self.task, total=self.total)
        where = "finished by" if elsewhere == "done" else "running in"
        self._line(f"[yellow]skip[/]  {trial.stage} seed {trial.seed} [dim]{trial.hash}[/]  {where} another invocation")

    def note(self, text: str) -> None:
        """News between rounds (adaptive seeds: which arms are decided, which get another seed and why), shown when
        it happens rather than at the end."""
        self.shown_notes.append(text)
        self.console.print(text)
        self._refresh()

    def eta_seconds(self) -> float | None:
        """Seconds until this phase's last trial ends; None until one has finished."""
        return self.times.seconds_left(self.total - self.done - self.failed, len(self.slots))

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
