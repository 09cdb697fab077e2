"""What `ablate run` shows while it works: a live bar on a terminal, plain lines otherwise (CI, logs)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ablate.design import Trial


class ConsoleReporter:
    def __init__(self, console: Console | None = None):
        self.console = console or Console(highlight=False, soft_wrap=True)  # logs: no wrapping at 80 columns
        self.live = self.console.is_terminal
        self.progress: Progress | None = None
        self.task = None
        self.total = self.done = self.failed = 0

    def start(self, total: int, skipped: int, device: str) -> None:
        self.total = total - skipped
        self.console.print(f"{total} trials: {skipped} already done, {self.total} to train on {device}")
        if self.live and self.total:
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self.task = self.progress.add_task("training", total=self.total)
            self.progress.start()

    def trial_started(self, trial: Trial) -> None:
        self._describe(f"{trial.stage} seed {trial.seed}")

    def epoch(self, trial: Trial, epoch: int, metrics: dict[str, float]) -> None:
        self._describe(
            f"{trial.stage} seed {trial.seed} epoch {epoch}/{trial.settings.train.epochs} "
            f"val acc {100 * metrics['val_accuracy']:.2f}%"
        )

    def trial_finished(self, trial: Trial, result) -> None:
        self.done += 1
        self._line(
            f"[green]done[/]  {trial.stage} seed {trial.seed} [dim]{trial.hash}[/]  "
            f"test acc {100 * result.test_accuracy:.2f}%  ({result.train_seconds:.1f} s)"
        )

    def trial_failed(self, trial: Trial, error: str) -> None:
        self.failed += 1
        self._line(f"[red]FAILED[/] {trial.stage} seed {trial.seed} [dim]{trial.hash}[/]  {error}")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def _describe(self, text: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, description=text)

    def _line(self, text: str) -> None:
        finished = self.done + self.failed
        self.console.print(f"[{finished:>{len(str(self.total))}}/{self.total}] {text}")
        if self.progress is not None:
            self.progress.update(self.task, completed=finished)
