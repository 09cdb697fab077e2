"""Run a study: skip finished trials, train the rest on a backend's workers, record every outcome.

The parent creates the experiment and its parent run before any worker starts (concurrent
first use of a SQLite store races), recovers runs a killed invocation left RUNNING, beats
the parent run's heartbeat while it works, then dispatches the tasks (ablate.run's
dispatcher) and closes the parent run with the counts — whatever stops it: Ctrl-C or
SIGTERM end it KILLED, an error FAILED, and a store that failed is said so (StoreError)
once the workers have stopped. The data is read and checked by the caller before any of
this (ablate.run's prepare, which decides the store, the slots and the data once), so a bad file is one error,
not one failed run per trial. What every invocation shares — the parent run, the workers, the pack sizes — is
ablate.run's invocation; a study with adaptive seeds is trained round by round (ablate.run's rounds).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from ablate._timeline import mark
from ablate.design import Trial, longest_first, pack_trials, plan_document
from ablate.run import _signals
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
from ablate.run._rounds import run_rounds
from ablate.search import RUN_ATTR, SearchTask
from ablate.spec import Study
from ablate.tracking import INTERRUPTED, PLAN_ARTIFACT, ROLE, Identity, alive

if TYPE_CHECKING:
    import optuna

    from ablate.tracking import Tracker


def run_study(prepared: Prepared, reporter: Reporter, command: str = "") -> RunSummary:
    """Train every trial of the prepared study not already done (see the module's docstring); a study with adaptive
    seeds trains them round by round (ablate.run's rounds)."""
    if prepared.study.adaptive is not None:
        return run_rounds(prepared, reporter, command)
    started = time.perf_counter()
    study, trials, tracker, execution = prepared.study, prepared.trials, prepared.tracker, prepared.execution
    slots, backend = prepared.slots, prepared.make_backend
    experiment_id = tracker.experiment(study.name)
    mark("store opened")
    tracker.show_runs(experiment_id, [trial.stage for trial in trials])
    recovered, elsewhere = tracker.recover_stale(experiment_id)
    done = tracker.finished_hashes(experiment_id)
    mark("store read")
    todo = [t for t in trials if t.hash not in done and t.hash not in elsewhere]
    notes: list[str] = []
    tasks = longest_first(pack_trials(todo, pack_size(execution.pack, slots, notes)))
    slots = slots[: max(1, len(tasks))]  # no idle workers
    summary = RunSummary(experiment_id, None, total=len(trials), skipped=len(trials) - len(todo),
                         recovered=recovered, running_elsewhere=len(elsewhere & {t.hash for t in trials}), slots=slots,
                         notes=notes)
    reporter.start(len(trials), summary.skipped, slots)
    if not todo:
        if not elsewhere & {t.hash for t in trials}:  # every trial done: the store holds the study as it stands
            record_changed_plan(prepared, summary, trials, command, started)
        settle_arms(tracker, summary, trials, study)
        return summary
    invocation = Invocation.start(prepared, experiment_id, len(trials), slots, command, {})
    summary.parent_run_id = invocation.parent_id
    with closing_parent(tracker, summary, started):
        tracker.log_dict(invocation.parent_id, plan_document(study, trials), PLAN_ARTIFACT)
        mark("parent run started")
        with dispatching(invocation, lambda: backend(slots, invocation.config), tracker, reporter,
                         summary) as dispatcher:
            dispatcher.run(tasks)
    settle_arms(tracker, summary, trials, study)
    return summary


def _search_trial_alive(tracker: Tracker) -> Callable[[Mapping[str, Any]], bool]:
    """Is the process that asked for an Optuna trial still running it? On its host, its pid says; elsewhere, its
    MLflow run's heartbeat (and its invocation's) does."""

    def alive_trial(attrs: Mapping[str, Any]) -> bool:
        if Identity.from_tags(attrs).here or RUN_ATTR not in attrs:
            return alive(attrs)
        return tracker.run_alive(str(attrs[RUN_ATTR]))

    return alive_trial


def run_search(prepared: Prepared, reporter: Reporter, command: str = "") -> RunSummary:
    """An Optuna search on the workers, then its best configurations re-trained on fresh seeds and tested.

    Any number of invocations may run one search at once: its budget of `trials` is counted over all of them (a
    worker asks only while it is not spent: search.ask), the random start is enqueued once (by the invocation that
    creates the Optuna study), and the confirm set is decided once (the claims database's decide) and kept on the
    Optuna study, so every invocation confirms the same configurations under the same names."""
    from ablate import search

    started = time.perf_counter()
    study, tracker, execution, storage = prepared.study, prepared.tracker, prepared.execution, prepared.storage
    spec = study.search
    experiment_id = tracker.experiment(study.name)
    tracker.show_runs(experiment_id, [])  # its arms' groups expanded once the confirm set is known
    recovered, _ = tracker.recover_stale(experiment_id)
    name = search.optuna_name(study)
    summary_note = _changed_search_note(storage, study.name, name)
    optuna_study = search.open_study(spec, storage, name, search.trial_epochs(study),  # created before any worker
                                     on_create=partial(search.set_up_new, study))
    search.describe(optuna_study, study)  # what a study an earlier ablate created lacks; else nothing to write
    recovered += _recover_search(tracker, experiment_id, optuna_study)
    done = search.finished_count(optuna_study)
    budget = spec.settings.trials
    slots, backend = prepared.slots, prepared.make_backend
    summary = RunSummary(experiment_id, None, total=max(budget, done) if budget else done + 10_000, skipped=done,
                         recovered=recovered, slots=slots, notes=summary_note)
    reporter.start(summary.total, done, slots)
    if budget and done >= budget:  # the search is complete: only confirm runs may be missing
        _, confirm = search.confirm_trials(study, optuna_study)
        if not _unfinished(tracker, experiment_id, confirm):
            summary.total, summary.skipped = summary.total + len(confirm), summary.skipped + len(confirm)
            tracker.show_runs(experiment_id, [trial.stage for trial in confirm])
            settle_arms(tracker, summary, confirm, study)
            return summary
    invocation = Invocation.start(prepared, experiment_id, summary.total, slots, command,
                                   {"optuna_storage": storage, "optuna_study": name})
    summary.parent_run_id = invocation.parent_id
    with closing_parent(tracker, summary, started):
        arms, confirm = (), []
        with dispatching(invocation, lambda: backend(slots, invocation.config), tracker, reporter,
                         summary) as dispatcher:
            _search(dispatcher, tracker, experiment_id, optuna_study, study, storage, summary)
            if not stopped(summary):  # the confirm phase, on the same workers
                arms, confirm = _confirm_set(tracker, experiment_id, study, optuna_study)
                todo = _unfinished(tracker, experiment_id, confirm)
                summary.total = search.finished_count(optuna_study) + len(confirm)
                summary.skipped += len(confirm) - len(todo)
                reporter.start(len(confirm), len(confirm) - len(todo), slots)
                dispatcher.run(longest_first(pack_trials(todo, pack_size(execution.pack, slots, summary.notes))))
        if not stopped(summary):  # an interrupted search has no confirm arms yet: reports keep the previous plan
            document = plan_document(study, confirm, arms)
            document["search"] = {"storage": storage, "study": optuna_study.study_name, "objective":
                                  spec.settings.objective, "trials": spec.settings.trials,
                                  "confirm_seeds": list(spec.confirm_seeds), "confirm_base": spec.settings.confirm_base}
            tracker.log_dict(summary.parent_run_id, document, PLAN_ARTIFACT)
    if confirm:
        tracker.show_runs(experiment_id, [trial.stage for trial in confirm])
    settle_arms(tracker, summary, confirm, study)
    return summary


WAIT_SECONDS = 2.0  # how often an invocation whose search tasks are done looks at trials other invocations train


def _search(dispatcher: Dispatcher, tracker: Tracker, experiment_id: str, optuna_study: optuna.Study, study: Study,
            storage: str, summary: RunSummary) -> None:
    """The search phase: tasks until the budget's trials are all done — those of other invocations too, as the confirm
    choice must see them; one that dies meanwhile is recovered here and its point trained again by whoever asks
    first. Without a `trials` budget, tasks until the timeout."""
    from ablate import search

    settings = study.search.settings
    deadline = None if settings.timeout is None else time.monotonic() + settings.timeout
    first = len(optuna_study.trials)
    while not stopped(summary):
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return
        if not settings.trials:
            tasks = [SearchTask(first + i, storage, study.path, study.text) for i in range(10_000)]
            dispatcher.run(tasks, timeout=left)
            return
        done, running = search.finished_count(optuna_study), search.running_count(optuna_study)
        if done >= settings.trials:
            return
        wanted = settings.trials - done - running
        if wanted > 0:
            tasks = [SearchTask(first + i, storage, study.path, study.text) for i in range(wanted)]
            first += wanted
            dispatcher.run(tasks, timeout=left)
        else:  # the rest are other invocations' trials: wait for them (a dead one's are recovered and asked again)
            try:
                time.sleep(WAIT_SECONDS)
            except KeyboardInterrupt as exc:  # as the dispatcher stops on it (nothing of ours is running)
                summary.interrupted, summary.stop_reason = True, _signals.as_interrupted(exc).reason
                return
            summary.recovered += _recover_search(tracker, experiment_id, optuna_study)


def _recover_search(tracker: Tracker, experiment_id: str, optuna_study: optuna.Study) -> list[dict[str, str]]:
    """Search trials whose asker is gone, failed and enqueued again (search.recover_stale) — then their MLflow runs
    brought in line with Optuna, whose trial is a search trial's claim: a trial ended FAIL ends its RUNNING run FAILED
    (interrupted); a trial told COMPLETE or PRUNED whose worker died before recording it completes its run FINISHED.
    Optuna's state is final, and a worker records its run only after its tell succeeded, so this never contradicts
    a live worker. Returns the runs ended FAILED (their tags)."""
    import optuna

    from ablate import search

    search.recover_stale(optuna_study, _search_trial_alive(tracker))
    trials = {t.number: t for t in optuna_study.get_trials(deepcopy=False)}
    recovered = []
    for run in tracker.search(experiment_id, f"tags.{ROLE} = 'search' and attributes.status = 'RUNNING'"):
        trial = trials.get(int(run.data.tags.get("optuna_trial", "-1")))
        if trial is None or trial.state == optuna.trial.TrialState.RUNNING:
            continue
        if trial.state == optuna.trial.TrialState.FAIL:
            if tracker.settle(run.info.run_id, "FAILED", error="interrupted", reason=INTERRUPTED,
                              force=True).ended_here:
                recovered.append(run.data.tags)
            continue
        tracker.set_tag(run.info.run_id, "optuna_state", trial.state.name)
        if trial.state == optuna.trial.TrialState.COMPLETE:
            tracker.log_metrics(run.info.run_id, {"objective": trial.values[0]},  # the validation objective
                                step=max(trial.intermediate_values or [0]))
        tracker.finish(run.info.run_id, "FINISHED")
    return recovered


def _confirm_set(tracker: Tracker, experiment_id: str, study: Study,
                 optuna_study: optuna.Study) -> tuple[tuple, list[Trial]]:
    """The confirm phase's arms and trials, chosen once for every invocation of the search: the first to get here
    decides (an insert only one can win, in the claims database), and the choice is kept on the Optuna study."""
    from ablate import search

    key = search.confirm_key(study, optuna_study)
    chosen = tracker.claims.decide(tracker.scope(experiment_id), f"confirm {optuna_study.study_name}: {key}",
                                   search.confirm_choice(study, optuna_study))
    search.store_confirm(optuna_study, key, chosen)
    return search.confirm_trials(study, optuna_study, chosen)


def _changed_search_note(storage: str, study_name: str, name: str) -> list[str]:
    """Say so when this search starts afresh because its settings or space changed (see search_identity)."""
    from ablate import search

    stored = search.stored_searches(storage, study_name)
    others = {n: count for n, count in stored.items() if n != name}
    if not others or name in stored:
        return []
    listed = ", ".join(f"'{n}' ({count} trials)" for n, count in others.items())
    return [f"The search's fixed settings or space changed since its last run, so its earlier scores do not rank "
            f"these configurations: a new Optuna study '{name}' starts; the earlier {listed} is kept, not continued."]



def _unfinished(tracker: Tracker, experiment_id: str, trials: list[Trial]) -> list[Trial]:
    finished = tracker.finished_hashes(experiment_id)
    return [t for t in trials if t.hash not in finished]
