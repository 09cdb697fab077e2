"""What a person sees in the terminal: `ablate plan`'s trial table, and `ablate run`'s progress.

`ablate run` shows a live display on a terminal, plain lines otherwise (CI, logs): one bar
for the study (done, failed and running counts, elapsed time and an ETA) and one line per
worker (its device, trial, epoch and latest validation accuracy). Imports neither torch nor
MLflow: `ablate plan` draws its table at once.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ablate import models
from ablate.design import Design, Pack, flatten, format_value, pack_trials, varying_settings
from ablate.spec import Study, format_label

if TYPE_CHECKING:
    from ablate.design import Trial
    from ablate.run import Outcome, Slot

STATUS_ORDER = ("done", "failed", "killed", "running", "to do")


def terminal() -> Console:
    """A console for tables: as wide as the terminal, or wide enough not to squeeze a pipe or a log to 80 columns."""
    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=240)


def status_of(statuses: dict[str, str] | None, trial_hash: str) -> str:
    return "to do" if statuses is None else statuses.get(trial_hash, "to do")


def plan_json(study: Study, design: Design, statuses: dict[str, str] | None) -> dict:
    return {
        "study": study.name,
        "design": study.info.design,
        "count": len(design.trials),
        "arms": design.arms,
        "excluded": study.excluded,
        "merged": [{"arm": arm, "same_as": kept} for arm, kept in design.merged],
        "trials": [
            {"hash": t.hash, "stage": t.stage, "seed": t.seed, "params_count": t.params_count,
             "status": status_of(statuses, t.hash), "settings": t.settings.to_dict()}
            for t in design.trials
        ],
    }


def print_plan(study: Study, design: Design, statuses: dict[str, str] | None, uri: str) -> None:
    """Each trial's hash, arm, seed, the settings that differ between trials, its size and its status in the store."""
    trials = design.trials
    varying = varying_settings(trials)
    table = Table(title=f"{study.name}: {study.info.design}", title_justify="left")
    # Conv blocks and custom-model arguments are unreadable as raw settings: one architecture column instead.
    structural = [k for k in varying if k.startswith(models.TABLE_SETTINGS)]
    varying = [k for k in varying if k not in structural]
    arm = "stage" if study.info.design == "ladder" else "arm"
    extra = ["model"] if structural else []
    status_column = ["status"] if statuses is not None else []
    for column in ("#", "hash", arm, "seed", *extra, *_short_names(varying), "params", *status_column):
        table.add_column(column, justify="right" if column in ("#", "seed", "params") else "left")
    for i, t in enumerate(trials, 1):
        flat = flatten(t.settings.to_dict())
        cells = [format_value(flat[k]) if k in flat else "" for k in varying]
        shape = [t.architecture] if structural else []
        status = [status_of(statuses, t.hash)] if statuses is not None else []
        table.add_row(str(i), t.hash, t.stage, str(t.seed), *shape, *cells, f"{t.params_count:,}", *status)
    console = terminal()
    console.print(table)
    console.print(plan_summary(study, design), markup=False)
    if statuses is not None:
        counts = Counter(status_of(statuses, t.hash) for t in trials)
        parts = [f"{counts[k]} {k}" for k in STATUS_ORDER if k in counts]
        console.print(f"Against {uri}: {', '.join(parts)}; `ablate run` trains every trial not done.", markup=False)


def search_plan(study: Study) -> tuple[list[dict[str, str]], str]:
    """A search has no fixed trial list: its space (one row per searched setting) and a line on its budget."""
    spec = study.search
    rows = []
    for entry in spec.space:
        if entry.kind == "categorical":
            values = ", ".join(entry.labels)
        else:
            values = f"{entry.low:g} … {entry.high:g}" + (" (log)" if entry.log else "") + (f" step {entry.step:g}" if entry.step else "")
        when = "; ".join(f"{p} = {' or '.join(format_label(x) for x in v)}" for p, v in entry.when)
        rows.append({"setting": entry.path, "kind": entry.kind, "values": values, "when": when})
    s = spec.settings
    budget = (f"{s.trials} trials" if s.trials else "no trial limit") + (f", at most {s.timeout:g} s" if s.timeout else "")
    direction = "maximize" if s.maximize else "minimize"
    summary = (f"search: {budget} ({s.sampler} sampler seeded {s.seed}, {s.pruner} pruner), {direction} {s.objective}, "
               f"seed {spec.seeds[0]}; then the top {s.confirm_top} re-trained on seeds "
               f"{', '.join(map(str, spec.confirm_seeds))} ({s.confirm_top * len(spec.confirm_seeds)} trials)")
    return rows, summary


def print_search_plan(study: Study) -> None:
    rows, summary = search_plan(study)
    table = Table(title=f"{study.name}: search space", title_justify="left")
    for column in ("setting", "kind", "values", "when"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row.values())
    console = terminal()
    console.print(table)
    console.print(summary, markup=False)


def plan_summary(study: Study, design: Design) -> str:
    """'48 trials: 24 arms × 2 seeds (seeds 0, 1); grid of 48 points, 12 excluded, 12 merged (...)'."""
    word = {"ladder": "stages", "ablation": "arms (baseline + arms)", "grid": "arms"}[study.info.design]
    seeds = study.info.seeds
    line = f"{len(design.trials)} trials: {design.arms} {word} × {len(seeds)} seeds (seeds {', '.join(map(str, seeds))})"
    if study.info.design == "grid":
        points = len(study.stages) + study.excluded
        line += f"; grid of {points} points, {study.excluded} excluded by [[exclude]], {len(design.merged)} merged"
        if design.merged:
            line += " (they resolve to the same settings as another point, e.g. " + \
                f"'{design.merged[0][0]}' = '{design.merged[0][1]}')"
    if study.execution.pack > 1:
        tasks = pack_trials(design.trials, study.execution.pack)
        packs = [t for t in tasks if isinstance(t, Pack)]
        line += (f"; [execution] pack = {study.execution.pack}: {len(packs)} packs of "
                 f"{'/'.join(sorted({str(len(p.trials)) for p in packs}, key=int)) or '—'} trials, "
                 f"{len(tasks) - len(packs)} trial(s) alone")
    return line


def _short_names(keys: list[str]) -> list[str]:
    """'model.dropout' → 'dropout' where the last part alone is unambiguous."""
    leaves = [k.split(".")[-2] if k.endswith(".kind") and k.count(".") > 1 else k.rsplit(".", 1)[-1] for k in keys]
    return [leaf if leaves.count(leaf) == 1 else key for key, leaf in zip(keys, leaves)]


def print_failures(console: Console, failed: list[tuple[Trial, str, str]]) -> None:
    for trial, reason, error in failed:
        console.print(f"[red]FAILED[/] ({reason}) {trial.stage} seed {trial.seed} ({trial.hash}): {error}")


class ConsoleReporter:
    """The run's Reporter (ablate.run's protocol) on a rich console."""

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

    def trial_finished(self, trial: Trial, slot: Slot, outcome: Outcome) -> None:
        self.done += 1
        self._worker(slot, "idle")
        result = outcome.note or (
            f"test acc {100 * outcome.test_accuracy:.2f}%  ({outcome.train_seconds:.1f} s, worker {slot.index})"
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
