"""What a person sees in the terminal: `ablate plan`'s trial table, and `ablate run`'s progress.

`ablate plan`'s tables fit the console's width without cutting a value: columns wrap at spaces
and never below their longest word, headers name settings by their shortest unambiguous suffix
(with a legend) and break at underscores, and a table too wide even then becomes one block per
trial. `ablate run` shows a live display on a terminal, plain lines otherwise (CI, logs): one bar
for the study (done, failed and running counts, elapsed time and an ETA from finished trials'
durations) and one line per worker (its device, trial, epoch and latest validation accuracy).
Imports neither torch nor MLflow: `ablate plan` draws its table at once.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich import box
from rich.cells import cell_len
from rich.console import Console, Group
from rich.live import Live
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ablate import datasets, models
from ablate.design import Design, Pack, flatten, format_value, pack_trials, resident_needs, varying_settings
from ablate.spec import Study, format_label, study_warnings, survey_space
from ablate.tracking import store_label

if TYPE_CHECKING:
    from ablate.design import Trial
    from ablate.run import Outcome, Slot

STATUS_ORDER = ("done", "failed", "killed", "running", "to do")
HASH_SHOWN = 8  # hash characters a table shows: unique among a study's trials, and never cut further


def terminal() -> Console:
    """A console for tables: as wide as the terminal (or $COLUMNS, even in a pipe), else wide enough not to
    squeeze a pipe or a log to 80 columns."""
    console = Console(highlight=False)  # rich reads $COLUMNS itself
    if console.is_terminal or os.environ.get("COLUMNS", "").isdigit():
        return console
    return Console(highlight=False, width=240)


def status_of(statuses: dict[str, str] | None, trial_hash: str) -> str:
    return "to do" if statuses is None else statuses.get(trial_hash, "to do")


def dataset_info(study: Study, trials: list) -> dict:
    """The study's dataset as a plan states it: shape, classes, sizes and what one worker holds resident."""
    data = datasets.get(study.info.dataset)
    return {"name": data.name, "title": data.title, "shape": list(data.shape), "classes": data.classes,
            "train_size": data.train_size, "test_size": data.test_size,
            "resident_bytes_per_worker": sum(resident_needs(study, trials).values())}


def dataset_line(info: dict) -> str:
    """'data: CIFAR-10, 3×32×32, 10 classes, 50,000 train / 10,000 test; 184 MB resident per worker'."""
    shape = "×".join(map(str, info["shape"]))
    return (f"data: {info['title']}, {shape}, {info['classes']} classes, {info['train_size']:,} train / "
            f"{info['test_size']:,} test; {info['resident_bytes_per_worker'] / 1e6:,.0f} MB resident per worker")


def plan_json(study: Study, design: Design, statuses: dict[str, str] | None) -> dict:
    return {
        "study": study.name,
        "design": study.info.design,
        "dataset": dataset_info(study, design.trials),
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


@dataclass(frozen=True)
class Column:
    """A column of a fitted table. `head`: the cell's format on a block's first line when the table falls back to
    one block per row; None: a `header: value` pair below it."""

    header: str
    right: bool = False
    nowrap: bool = False  # short fixed-form values (#, hash, seed, size, status): wrapping them helps nobody
    head: str | None = None


def print_plan(study: Study, design: Design, statuses: dict[str, str] | None, uri: str) -> None:
    """Each trial's hash, arm, seed, the settings that differ between trials, its size and its status in the store."""
    trials = design.trials
    varying = varying_settings(trials)
    # Conv blocks and custom-model arguments are unreadable as raw settings: one architecture column instead.
    structural = [k for k in varying if k.startswith(models.TABLE_SETTINGS)]
    varying = [k for k in varying if k not in structural]
    labels = setting_labels(varying)
    columns = [Column("#", right=True, nowrap=True, head="#{}"), Column("hash", nowrap=True, head="{}"),
               Column("stage" if study.info.design == "ladder" else "arm", head="{}"), Column("seed", right=True, nowrap=True),
               *([Column("model")] if structural else []), *(Column(label) for label in labels),
               Column("params", right=True, nowrap=True), *([Column("status", nowrap=True)] if statuses is not None else [])]
    rows = []
    for i, (t, shown) in enumerate(zip(trials, shown_hashes(trials)), 1):
        flat = flatten(t.settings.to_dict())
        cells = [format_value(flat[k]) if k in flat else "" for k in varying]
        shape = [t.architecture] if structural else []
        status = [status_of(statuses, t.hash)] if statuses is not None else []
        rows.append([str(i), shown, t.stage, str(t.seed), *shape, *cells, f"{t.params_count:,}", *status])
    console = terminal()
    print_fitted(console, f"{study.name}: {study.info.design}", columns, rows)
    if labels != varying:  # a column named by a suffix: say which setting it is
        console.print("settings: " + ", ".join(varying), markup=False)
    console.print(plan_summary(study, design), markup=False)
    console.print(dataset_line(dataset_info(study, trials)), markup=False)
    where = store_label(uri)
    if statuses is not None:
        counts = Counter(status_of(statuses, t.hash) for t in trials)
        parts = [f"{counts[k]} {k}" for k in STATUS_ORDER if k in counts]
        console.print(f"Against {where}: {', '.join(parts)}; `ablate run` trains every trial not done.", markup=False)
    else:  # say which store was looked at: run from another folder, this is the first thing to know
        console.print(f"No store at {where} yet: every trial is to do; the first `ablate run` here creates it "
                      "(--tracking-uri for another).", markup=False)
    print_warnings(console, study)


def shown_hashes(trials: Sequence[Trial]) -> list[str]:
    """Each trial's hash as a table shows it: its first HASH_SHOWN characters, or all of them in the rare study
    where two trials share those (a table must never show two trials alike)."""
    short = [t.hash[:HASH_SHOWN] for t in trials]
    return short if len(set(short)) == len({t.hash for t in trials}) else [t.hash for t in trials]


def setting_labels(keys: list[str]) -> list[str]:
    """Each dotted setting by its shortest suffix that no other key ends with: 'model.dropout' → 'dropout'.

    A nested table's kind goes by the table's name ('train.schedule.kind' → 'schedule'), as a study file writes it.
    """
    named = [k.removesuffix(".kind") if k.endswith(".kind") and k.count(".") > 1 else k for k in keys]
    labels = []
    for key in named:
        others = [o for o in named if o != key]
        parts = key.split(".")
        suffixes = (".".join(parts[-n:]) for n in range(1, len(parts) + 1))
        labels.append(next((x for x in suffixes if not any(o == x or o.endswith("." + x) for o in others)), key))
    return labels


# From the usual boxed look to tighter ones, each a character or two narrower per column; then blocks.
TABLE_STYLES: tuple[dict, ...] = (
    {},
    {"box": box.SIMPLE_HEAD, "show_edge": False, "pad_edge": False, "collapse_padding": True},
    {"box": box.SIMPLE_HEAD, "show_edge": False, "padding": 0},  # one space between columns, a rule under the header
)


def print_fitted(console: Console, title: str, columns: list[Column], rows: list[list[str]]) -> None:
    """A table as wide as the console without cutting a word, else one block per row. Headers break before cells
    wrap, and a tighter style is better than wrapped cells (a wrapped column makes every row taller)."""
    cells = [[row[i] for row in rows] for i in range(len(columns))]
    full = [max(map(cell_len, [c.header, *values])) for c, values in zip(columns, cells)]
    unbroken = [max(map(cell_len, [*_header_parts(c.header), *values])) for c, values in zip(columns, cells)]
    narrowest = [_min_width(c, values) for c, values in zip(columns, cells)]
    for low, high in ((unbroken, full), (narrowest, unbroken)):
        for style in TABLE_STYLES:
            room = console.width - _overhead(console, len(columns), style)
            if sum(low) <= room:
                console.print(fitted_table(title, columns, rows, style, share_widths(low, high, room)))
                return
    print_blocks(console, title, columns, rows)


def fitted_table(title: str, columns: list[Column], rows: list[list[str]], style: dict, widths: list[int]) -> Table:
    """The table with these column widths, each at least its longest word: cells wrap at spaces, headers after
    underscores, and nothing is cut (fold, not an ellipsis, should a width ever be short)."""
    table = Table(title=title, title_justify="left", **style)
    for column, width in zip(columns, widths):
        table.add_column(break_header(column.header, width), width=width, no_wrap=column.nowrap, overflow="fold",
                         justify="right" if column.right else "left")
    for row in rows:
        table.add_row(*row)
    return table


def _header_parts(header: str) -> list[str]:
    """'final_div_factor' → ['final_', 'div_', 'factor']: where a header may break."""
    parts = header.split("_")
    return [p + "_" for p in parts[:-1]] + parts[-1:]


def _min_width(column: Column, values: list[str]) -> int:
    """The narrowest the column can be without cutting a word of a cell or a part of its header."""
    words = values if column.nowrap else [w for v in values for w in v.split()]
    return max(map(cell_len, [*_header_parts(column.header), *words]))


def break_header(header: str, width: int) -> str:
    """The header in lines of at most `width`, broken after underscores."""
    lines = [""]
    for part in _header_parts(header):
        if lines[-1] and cell_len(lines[-1] + part) > width:
            lines.append("")
        lines[-1] += part
    return "\n".join(lines)


def share_widths(lows: list[int], highs: list[int], room: int) -> list[int]:
    """Column widths within `room` (≥ the sum of `lows`): the widest columns cut down to a common level, none below
    its low (rich's own shrinking ignores minimums, so it would cut words)."""
    level = max(highs)
    while sum(min(high, max(low, level)) for low, high in zip(lows, highs)) > room:
        level -= 1
    widths = [min(high, max(low, level)) for low, high in zip(lows, highs)]
    spare = room - sum(widths)
    for i, high in enumerate(highs):  # what the common level left over, to the first columns still cut
        extra = min(spare, high - widths[i])
        widths[i] += extra
        spare -= extra
    return widths


def _overhead(console: Console, count: int, style: dict) -> int:
    """Columns' padding and rules in a style: measured, as rich lays them out."""
    probe = Table(**style)
    for _ in range(count):
        probe.add_column(width=1)
    return Measurement.get(console, console.options.update_width(10_000), probe).maximum - count


def print_blocks(console: Console, title: str, columns: list[Column], rows: list[list[str]]) -> None:
    """One block per row: its head cells on one line, then its other cells as `header: value` pairs, packed."""
    console.print(title, markup=False)
    for row in rows:
        console.print("  ".join(c.head.format(v) for c, v in zip(columns, row) if c.head and v), markup=False)
        pairs = [f"{c.header}: {v}" for c, v in zip(columns, row) if c.head is None and v]
        for line in pack(pairs, console.width - 4):
            console.print("    " + line, markup=False)


def pack(items: list[str], width: int, gap: str = "  ") -> list[str]:
    """Items joined into lines of at most `width` (an item longer than that alone on its line)."""
    lines: list[str] = []
    for item in items:
        if lines and cell_len(lines[-1] + gap + item) <= width:
            lines[-1] += gap + item
        else:
            lines.append(item)
    return lines


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
    confirmed = s.confirm_top + s.confirm_base
    summary = (f"search: {budget} ({s.sampler} sampler seeded {s.seed}, {s.pruner} pruner), {direction} {s.objective}, "
               f"seed {spec.seeds[0]}; then the top {s.confirm_top}{' and the base settings' if s.confirm_base else ''} "
               f"re-trained on seeds {', '.join(map(str, spec.confirm_seeds))} ({confirmed * len(spec.confirm_seeds)} trials)")
    budgets = [f"{key} {getattr(s, key):,}" for key in ("max_params", "max_macs") if getattr(s, key) is not None]
    if budgets:
        summary += (f"\n{' and '.join(budgets)}: {survey_space(study).describe()}; the others are rejected before "
                    "training")
    return rows, summary


def print_search_plan(study: Study) -> None:
    rows, summary = search_plan(study)
    columns = [Column("setting", head="{}"), Column("kind", nowrap=True), Column("values"), Column("when")]
    console = terminal()
    print_fitted(console, f"{study.name}: search space", columns, [list(row.values()) for row in rows])
    console.print(summary, markup=False)
    console.print(dataset_line(dataset_info(study, [])), markup=False)
    print_warnings(console, study)


def print_warnings(console: Console, study: Study) -> None:
    """What in the study file is allowed but probably not meant (ablate.spec.study_warnings)."""
    for warning in study_warnings(study):
        console.print(Text.assemble(("warning: ", "yellow"), warning))


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
    if isinstance(study.execution.pack, int) and study.execution.pack > 1:
        tasks = pack_trials(design.trials, study.execution.pack)
        packs = [t for t in tasks if isinstance(t, Pack)]
        line += (f"; [execution] pack = {study.execution.pack}: {len(packs)} packs of "
                 f"{'/'.join(sorted({str(len(p.trials)) for p in packs}, key=int)) or '—'} trials, "
                 f"{len(tasks) - len(packs)} trial(s) alone")
    return line


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


def print_report_table(console: Console, report) -> None:
    """A study's comparison table in the terminal: the default columns (ablate.report's), fitted to its width."""
    from ablate.report import summary_frame

    frame = summary_frame(report, "default")
    delta = next((str(h) for h in frame.columns if str(h).startswith("Δ vs")), None)
    frame.columns = [_short_header(str(h)) for h in frame.columns]  # the markdown's footnote is not here to explain
    numeric = {"n", "Params", "Ref (%)"}
    whole = numeric | {"95% CI", frame.columns[3] if len(frame.columns) > 3 else ""}  # numbers never break mid-way
    columns = [Column(h, right=h in numeric, nowrap=h in whole or h.startswith(("Test", "Val"))) for h in frame.columns]
    rows = [[str(v).replace("**", "") for v in row] for row in frame.itertuples(index=False)]
    title = f"{report.name}: {len(report.runs)} of {report.planned} planned trials finished"
    print_fitted(console, title + (f"; Δ: {delta.removeprefix('Δ ')}" if delta else ""), columns, rows)


def _short_header(header: str) -> str:
    """A terminal header without what the end-of-run line and the markdown already say."""
    for long, short in (("Changes (", "Changes"), ("Search result (", "Search result"), ("Reference (%)", "Ref (%)")):
        if header.startswith(long):
            return short
    return "Δ" if header.startswith("Δ vs") else header
