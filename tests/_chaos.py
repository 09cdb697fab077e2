"""Chaos for exactly once: N concurrent `ablate run` of one study, random drivers killed (-9, alone or with their
workers) or stopped (SIGTERM) mid-run, a reader racing them — then one clean run finishes the study, and what the
store holds is checked:

- every trial *trained* once: exactly one run of it logged the final metric (test_accuracy; a search trial's
  objective), whatever its status, and exactly one run of it is FINISHED;
- no FINISHED run changed after the reader first saw it (status, end time, metrics);
- a search kept its budget (its counted Optuna trials are `trials`, each with its own point) and confirmed one set of
  configurations, the same in every invocation's plan, each confirm trial trained once.

Used by tests/e2e/test_chaos.py, and standalone against any checkout (the "before" of issue 27):

    python tests/_chaos.py --repo /path/to/checkout --kind grid --drivers 4 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO / "data"

GRID = """
[study]
name = "chaos-grid"
seeds = [0, 1, 2, 3]

[data]
val_size = 300
train_limit = 600
test_limit = 300

[train]
epochs = 3
batch_size = 100

[[stage]]
name = "linear"
model = { kind = "linear" }

[[stage]]
name = "mlp16"
model = { kind = "mlp", hidden = [16] }

[[stage]]
name = "mlp32"
model = { kind = "mlp", hidden = [32] }
"""

SEARCH = """
[study]
name = "chaos-search"
design = "search"
seeds = [0]

[data]
val_size = 300
train_limit = 600
test_limit = 300

[model]
kind = "mlp"
hidden = [16]

[train]
epochs = 3
batch_size = 100

[search]
trials = 6
startup_trials = 2
warmup_epochs = 0
pruner = "none"
confirm_top = 2
confirm_seeds = [10, 11]

[search.space]
"train.lr" = { low = 1e-3, high = 0.3, log = true }
"""

STUDIES = {"grid": GRID, "search": SEARCH}
NAMES = {"grid": "chaos-grid", "search": "chaos-search"}
BLOWS = ("kill-driver", "kill-group", "sigterm")  # -9 to the driver alone (its workers orphaned), to all, SIGTERM


@dataclass
class Outcome:
    """What one round left in the store, and what was wrong with it (`problems` empty: every assertion held)."""

    kind: str
    drivers: int
    blows: list[str]
    exits: list[int | None]
    trained_twice: dict[str, int] = field(default_factory=dict)  # trial → runs that logged its final metric
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        verdict = "ok" if not self.problems else "; ".join(self.problems)
        return (
            f"{self.kind} N={self.drivers} blows={','.join(self.blows) or '-'} exits={self.exits} "
            f"{self.seconds:.0f}s: {verdict}"
        )


class Reader(threading.Thread):
    """Reads the store while the drivers write it; remembers each FINISHED run as first seen."""

    def __init__(self, repo: Path, uri: str, name: str):
        super().__init__(daemon=True)
        self.repo, self.uri, self.name = repo, uri, name
        self.seen: dict[str, tuple] = {}
        self.changed: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        from mlflow.tracking import MlflowClient

        client = None
        while not self.stop.wait(0.3):
            if client is None and self.uri.startswith("sqlite:///") and not Path(self.uri[10:]).exists():
                continue  # opening a store that does not exist creates it: the drivers' to do
            try:
                client = client or MlflowClient(self.uri)
                self.look(client)
            except Exception:  # noqa: BLE001 — a store being created, a busy moment: read again
                continue

    def look(self, client) -> None:
        experiment = client.get_experiment_by_name(self.name)
        if experiment is None:
            return
        for run in client.search_runs([experiment.experiment_id], max_results=5000):
            if run.info.status != "FINISHED" or run.data.tags.get("role") not in ("trial", "search"):
                continue
            snapshot = (run.info.status, run.info.end_time, tuple(sorted(run.data.metrics.items())))
            first = self.seen.setdefault(run.info.run_id, snapshot)
            if first != snapshot and run.info.run_id not in self.changed:
                self.changed.append(run.info.run_id)


def _driver(repo: Path, study: Path, uri: str, extra: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "ABLATE_DATA_DIR": str(DATA_DIR), "PYTHONPATH": str(repo)}
    command = [sys.executable, "-m", "ablate", "run", str(study), "--tracking-uri", uri, "--max-workers", "1", *extra]
    with open(log, "ab") as out:
        return subprocess.Popen(
            command, cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )  # its own group: kill-group reaches its workers only


def _blow(process: subprocess.Popen, blow: str) -> None:
    try:
        if blow == "kill-driver":
            os.kill(process.pid, signal.SIGKILL)
        elif blow == "kill-group":
            os.killpg(process.pid, signal.SIGKILL)
        else:
            os.kill(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass  # it had ended already


def run_round(
    repo: Path,
    folder: Path,
    kind: str,
    drivers: int,
    rng: random.Random,
    uri: str | None = None,
    extra: tuple[str, ...] = (),
    blows: int | None = None,
    window: tuple[float, float] = (4.0, 14.0),
    timeout: float = 600.0,
    storage: str | None = None,
) -> Outcome:
    """One round: `drivers` invocations at once, `blows` of them (default: half) hit at a random moment of `window`
    seconds, a reader throughout; then a clean invocation, and the checks. `uri`: the tracking store (default: a
    SQLite file in `folder`); `storage`: a search's Optuna storage when not the journal beside it (then also passed
    to the drivers)."""
    if storage is not None:
        extra = (*extra, "--storage", storage)
    started = time.monotonic()
    folder.mkdir(parents=True, exist_ok=True)
    study = folder / f"{kind}.toml"
    study.write_text(STUDIES[kind])
    uri = uri or f"sqlite:///{folder / 'mlflow.db'}"
    log = folder / "drivers.log"
    reader = Reader(repo, uri, NAMES[kind])
    processes = [_driver(repo, study, uri, list(extra), log) for _ in range(drivers)]
    reader.start()
    victims = rng.sample(range(drivers), drivers // 2 if blows is None else blows)
    hits = sorted((rng.uniform(*window), index, rng.choice(BLOWS)) for index in victims)
    for at, index, blow in hits:
        time.sleep(max(0.0, at - (time.monotonic() - started)))
        _blow(processes[index], blow)
    exits = [_wait(p, timeout) for p in processes]
    time.sleep(1.0)  # orphaned workers notice their driver is gone and record it
    final = subprocess.run(
        [sys.executable, "-m", "ablate", "run", str(study), "--tracking-uri", uri, "--max-workers", "1", *extra],
        cwd=repo,
        env={**os.environ, "ABLATE_DATA_DIR": str(DATA_DIR), "PYTHONPATH": str(repo)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    reader.stop.set()
    reader.join(timeout=30)
    outcome = Outcome(kind, drivers, [blow for _, _, blow in hits], exits)
    if final.returncode != 0:
        outcome.problems.append(f"the clean run exited {final.returncode}: {final.stdout[-600:]}{final.stderr[-600:]}")
    _check(outcome, uri, NAMES[kind], reader, storage or str(folder / "optuna-journal.log"))
    outcome.seconds = time.monotonic() - started
    return outcome


def _wait(process: subprocess.Popen, timeout: float) -> int | None:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return None


def _check(outcome: Outcome, uri: str, name: str, reader: Reader, storage: str) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    reader.look(client)  # a last look, after everything
    if reader.changed:
        outcome.problems.append(f"{len(reader.changed)} FINISHED runs changed after they were seen")
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], max_results=5000)
    trials = [r for r in runs if r.data.tags.get("role") == "trial"]
    _check_trained_once(outcome, trials, "test_accuracy", lambda r: r.data.tags.get("trial_hash"), "trial")
    if outcome.kind == "grid":
        expected = 12
    else:
        searched = [r for r in runs if r.data.tags.get("role") == "search"]
        _check_trained_once(outcome, searched, "objective", lambda r: r.data.tags.get("optuna_trial"), "search trial")
        _check_search(outcome, client, runs, storage)
        expected = len({r.data.tags.get("trial_hash") for r in trials})  # the confirm trials (checked there)
    finished = Counter(r.data.tags.get("trial_hash") for r in trials if r.info.status == "FINISHED")
    if len(finished) != expected:
        outcome.problems.append(f"{len(finished)} of {expected} trials FINISHED after the clean run")


def _check_trained_once(outcome: Outcome, runs: list, metric: str, key, what: str) -> None:
    trained = Counter(key(r) for r in runs if metric in r.data.metrics)
    twice = {k: n for k, n in trained.items() if n > 1}
    outcome.trained_twice.update(twice)
    if twice:
        outcome.problems.append(f"{len(twice)} {what}s trained more than once ({sum(twice.values())} runs)")
    doubly = Counter(key(r) for r in runs if r.info.status == "FINISHED")
    if any(n > 1 for n in doubly.values()):
        outcome.problems.append(f"{sum(1 for n in doubly.values() if n > 1)} {what}s with more than one FINISHED run")


def _check_search(outcome: Outcome, client, runs: list, storage: str) -> None:
    """The budget, distinct points, and one confirm set — as Optuna's storage and the parents' plans hold them."""
    import optuna

    if "://" not in storage:
        if not Path(storage).exists():
            outcome.problems.append("no Optuna journal beside the store")
            return
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage))
    names = [n for n in optuna.get_all_study_names(storage) if n.startswith("chaos-search@")]
    study = optuna.load_study(study_name=names[0], storage=storage)
    counted = [t for t in study.trials if _counts(t)]
    if len(counted) != 6:
        outcome.problems.append(f"the search counted {len(counted)} trials, its budget is 6")
    points = Counter(json.dumps(t.params, sort_keys=True) for t in counted)
    if any(n > 1 for n in points.values()):
        outcome.problems.append(f"{sum(n - 1 for n in points.values() if n > 1)} counted trials repeat a point")
    plans = set()
    for parent in (r for r in runs if r.data.tags.get("role") == "parent" and r.info.status == "FINISHED"):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                plan = json.loads(Path(client.download_artifacts(parent.info.run_id, "plan.json", tmp)).read_text())
            except Exception:  # noqa: BLE001 — a parent with no confirm phase
                continue
        plans.add(json.dumps(sorted((t["stage"], t["hash"]) for t in plan.get("trials", []))))
    if len(plans) > 1:
        outcome.problems.append(f"{len(plans)} different confirm sets among the finished invocations")


def _counts(trial) -> bool:
    import optuna

    attrs = trial.user_attrs
    if attrs.get("rejected") or attrs.get("declined"):
        return False
    states = optuna.trial.TrialState
    return trial.state in (states.COMPLETE, states.PRUNED) or (
        trial.state == states.FAIL and not attrs.get("interrupted")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose ablate runs (default: this one)")
    parser.add_argument("--kind", choices=sorted(STUDIES), default="grid")
    parser.add_argument("--drivers", type=int, nargs="+", default=[4])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--blows", type=int, default=None, help="drivers hit per round (default: half)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folder", type=Path, default=None)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    root = args.folder or Path(tempfile.mkdtemp(prefix="ablate-chaos-"))
    failed = 0
    for round_ in range(args.rounds):
        for drivers in args.drivers:
            outcome = run_round(
                args.repo.resolve(), root / f"{args.kind}-{drivers}-{round_}", args.kind, drivers, rng, blows=args.blows
            )
            failed += bool(outcome.problems)
            print(f"round {round_ + 1}: {outcome.line()}", flush=True)
    print(f"{failed} of {args.rounds * len(args.drivers)} rounds failed (folders in {root})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
