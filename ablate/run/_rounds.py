"""Run a study with adaptive seeds: round after round on the same workers, each round the trials the decisions so far
call for (ablate.run's adaptive), until no arm needs another seed.

Round 1 trains every arm's first `min` seeds. After each round the finished trial runs' metric is read back from the
store and every arm decided again; an arm still undecided gets its next seed (the baseline with it) in the next
round. Since the decisions read only finished results, a rerun — after Ctrl-C, a crash, or to pick up what another
invocation finished — decides the same and trains only what is missing. A trial running in another invocation is
left to it, and a trial that failed here is not tried again in this invocation (the next `ablate run` retries it):
an arm that needs one waits, and its note says so. Ctrl-C or SIGTERM start no new round. The parent run, its plan
document (every trial an arm may get) and the workers are an invocation's as for any study (ablate.run's invocation).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ablate.design import Trial, longest_first, pack_trials, plan_document
from ablate.run._adaptive import FAILED_HERE, RUNNING_ELSEWHERE, Round, final_note, next_round, round_note
from ablate.run._dispatch import Dispatcher, Reporter, RunSummary
from ablate.run._invocation import (
    Invocation,
    closing_parent,
    dispatching,
    pack_size,
    record_changed_plan,
    settle_arms,
    stopped,
)
from ablate.run._prepare import Prepared
from ablate.tracking import PLAN_ARTIFACT, ROLE, TRIAL_HASH

if TYPE_CHECKING:
    from ablate.tracking import Tracker


def run_rounds(prepared: Prepared, reporter: Reporter, command: str = "") -> RunSummary:
    """Train the rounds of the prepared adaptive study not already done (see the module's docstring)."""
    started = time.perf_counter()
    study, trials, tracker = prepared.study, prepared.trials, prepared.tracker
    slots, backend = prepared.slots, prepared.make_backend
    experiment_id = tracker.experiment(study.name)
    tracker.show_runs(experiment_id, list(dict.fromkeys(trial.stage for trial in trials)))
    recovered, elsewhere = tracker.recover_stale(experiment_id)
    held = dict.fromkeys(elsewhere & {t.hash for t in trials}, RUNNING_ELSEWHERE)
    results = finished_results(tracker, experiment_id, study.stats.metric)
    done_before = set(results) | set(held)
    notes: list[str] = []
    _add(notes, design_change(tracker, experiment_id, study) if results else None, reporter)
    current = next_round(study, trials, results, held)
    packer = _probed_once(pack_size(prepared.execution.pack, slots, notes))
    tasks = longest_first(pack_trials(current.todo, packer))
    slots = slots[: max(1, len(tasks))]  # no idle workers (the first round is the largest)
    wanted = len(current.wanted)
    summary = RunSummary(experiment_id, None, total=wanted, skipped=wanted - len(current.todo), recovered=recovered,
                         running_elsewhere=len(held), slots=slots, notes=notes)
    _add(notes, round_note(None, current), reporter)
    reporter.start(summary.total, summary.skipped, slots)
    if current.todo:
        invocation = Invocation.start(prepared, experiment_id, len(trials), slots, command, {})
        summary.parent_run_id = invocation.parent_id
        with closing_parent(tracker, summary, started):
            tracker.log_dict(invocation.parent_id, plan_document(study, trials), PLAN_ARTIFACT)
            with dispatching(invocation, lambda: backend(slots, invocation.config), tracker, reporter,
                             summary) as dispatcher:
                current = _train_rounds(dispatcher, prepared, current, held, packer)
    elif not any(arm.more for arm in current.arms.values()):  # every arm done: the store holds the study
        record_changed_plan(prepared, summary, trials, command, started)
    summary.total = len(current.wanted)
    summary.skipped = sum(1 for t in current.wanted if t.hash in done_before)
    if not stopped(summary):
        notes.append(final_note(current))
    settle_arms(tracker, summary, current.settled, study)
    return summary


def _train_rounds(dispatcher: Dispatcher, prepared: Prepared, current: Round, held: dict[str, str],
                  packer: int | Callable[[list[Trial]], int]) -> Round:
    """Round after round until no arm needs a trial this invocation may train, or the run is stopped; the decisions
    after the last round."""
    study, tracker, summary, reporter = prepared.study, prepared.tracker, dispatcher.summary, dispatcher.reporter
    tried: set[str] = set()
    while current.todo and not stopped(summary):
        if tried:  # a later round: its own count, as a search's confirm phase has
            wanted = len(current.wanted)
            reporter.start(wanted, wanted - len(current.todo), summary.slots)
        tried |= {t.hash for t in current.todo}
        dispatcher.run(longest_first(pack_trials(current.todo, packer)))
        if stopped(summary):
            break
        results = finished_results(tracker, summary.experiment_id, study.stats.metric)
        failed = {trial.hash for trial, _, _ in summary.failed}
        for missing in tried - results.keys():  # failed here, or claimed first by another invocation
            held.setdefault(missing, FAILED_HERE if missing in failed else RUNNING_ELSEWHERE)
        previous, current = current, next_round(study, prepared.trials, results, held)
        _add(summary.notes, round_note(previous, current), reporter)
    return current


def finished_results(tracker: Tracker, experiment_id: str, metric: str) -> dict[str, float]:
    """Trial hash → `metric` of its latest FINISHED trial run (the one the report reads), in the report's units:
    accuracies ×100 (percentage points, as [stats] margin is written); nan where the run lacks the metric."""
    runs = tracker.search(experiment_id, f"tags.{ROLE} = 'trial' and attributes.status = 'FINISHED'")
    scale = 100.0 if metric.endswith("accuracy") else 1.0
    latest: dict[str, float] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time or 0):
        if TRIAL_HASH in run.data.tags:
            latest[run.data.tags[TRIAL_HASH]] = run.data.metrics.get(metric, math.nan) * scale
    return latest


def design_change(tracker: Tracker, experiment_id: str, study) -> str | None:
    """A warning when `seeds = { min, max, first }` or `[stats]` differ from what the study's latest run used (its
    plan document): every round is then re-read with the new boundaries, and a design changed after its results were
    seen does not keep the error rates it was computed for. None when nothing changed or no earlier plan is known."""
    from ablate.tracking import latest_plan, parent_runs

    before = latest_plan(tracker, parent_runs(tracker, experiment_id))
    if before is None:
        return None
    now = plan_document(study, [])
    changes = [f"{group}.{key} {old} → {now[group].get(key)}"
               for group in ("adaptive", "stats") for key, old in (before.get(group) or {}).items()
               if now.get(group) and key in now[group] and now[group][key] != old]
    if not changes:
        return None
    return (f"adaptive seeds: the design changed since this study's last run ({', '.join(changes)}): every round is "
            "re-read with the new boundaries, so arms decided before may get more seeds and undecided ones may stop; "
            "verdicts of a design changed after its results were seen do not carry its stated error rates")


def _probed_once(size: int | Callable[[list[Trial]], int]) -> int | Callable[[list[Trial]], int]:
    """`pack = auto` probes an architecture's packing on the CPU once per invocation, not once per round: a round's
    group no larger than one probed before takes the size chosen then."""
    if not callable(size):
        return size
    chosen: dict[str, tuple[int, int]] = {}  # architecture → (the group's size when probed, the size chosen)

    def probed(group: list[Trial]) -> int:
        known = chosen.get(group[0].architecture)
        if known is None or len(group) > known[0]:
            known = chosen[group[0].architecture] = (len(group), size(group))
        return min(known[1], len(group))

    return probed


def _add(notes: list[str], note: str | None, reporter: Reporter | None = None) -> None:
    """Keep the note for the run's end; show it now too, when a reporter is given."""
    if note is not None:
        notes.append(note)
        if reporter is not None:
            reporter.note(note)
