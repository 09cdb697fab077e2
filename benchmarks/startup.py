"""The seconds before the first training step of `ablate run studies/linearity.toml`, phase by phase.

Each repeat starts the command on a fresh store (or, with --store existing, on one an earlier run created) with
ABLATE_TIMELINE set (ablate._timeline: every process of the run marks its phases on the system-wide monotonic
clock), waits for the first worker's first training step, then stops the run (SIGTERM, as a scheduler would) and
reads the marks: seconds from the moment this script started the command to each phase's first mark.

    python benchmarks/startup.py [--repeats 5] [--trees before=/tmp/old-checkout,now=.] [--store new|existing]
                                 [--to-end]

With --to-end the run is left to finish, and its wall time is the last row (the linearity study's 15 trials).

With several trees (checkouts of ablate, e.g. the commit before a change and this one) the repeats alternate
between them (A B A B ...), so a machine busy with other work slows both alike; the table gives medians.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STUDY = Path("studies") / "linearity.toml"
FIRST_STEP = "first step"
ENDED = "run ended"  # not a mark: when the command exited (--to-end)
# The phases in the order a run reaches them (those a tree does not mark are left blank): the parent's, then the
# first worker's.
PHASES = ("python started", "cli imported", "ablate.run imported", "study loaded", "slots planned",
          "store file checked", "data checked", "worker server started", "store opened", "store read",
          "parent run started", "workers started", "worker forked", "worker ready", "trial claimed", "data loaded",
          FIRST_STEP, ENDED)


def one_start(tree: Path, folder: Path, store: str, timeout: float = 300, to_end: bool = False) -> dict[str, float]:
    """Start `ablate run` of `tree`'s linearity study on `store`; seconds from the start to each phase's first mark,
    once the first training step was marked (the run is then stopped; with `to_end`, left to finish)."""
    timeline = folder / f"timeline-{time.monotonic_ns()}.tsv"
    env = {**os.environ, "ABLATE_TIMELINE": str(timeline), "PYTHONPATH": str(tree),
           "ABLATE_DATA_DIR": str(REPO / "data")}
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "ablate", "run", str(STUDY), "--tracking-uri", store],
                               cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        marks = _wait_for(timeline, process, timeout)
        if to_end:
            process.wait(timeout=3600)
            marks[ENDED] = time.monotonic()
    finally:
        _stop(process)
    return {phase: at - started for phase, at in marks.items()}


def _wait_for(timeline: Path, process: subprocess.Popen, timeout: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        marks = _read(timeline)
        if FIRST_STEP in marks:
            return marks
        if process.poll() is not None:
            raise RuntimeError(f"ablate run ended (exit code {process.returncode}) before its first step")
        time.sleep(0.02)
    raise TimeoutError(f"no first step within {timeout:.0f} s")


def _read(timeline: Path) -> dict[str, float]:
    """Each phase's first mark (the parent's or the first worker's), on the monotonic clock."""
    marks: dict[str, float] = {}
    if not timeline.exists():
        return marks
    for line in timeline.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) == 3:
            marks.setdefault(parts[2], float(parts[0]))
    return marks


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the run (it ends its runs and workers), then whatever of its process group is left."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the group this script started (start_new_session)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def measure(trees: dict[str, Path], repeats: int, store: str = "new",
            to_end: bool = False) -> dict[str, list[dict[str, float]]]:
    """`repeats` starts of each tree, interleaved; each start's seconds to each phase."""
    found: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as folder:
        for name, tree in trees.items():  # one start not counted: files in the page cache, the empty store kept
            one_start(tree, Path(folder), _store(folder, name if store == "existing" else f"{name}-warm"))
        for repeat in range(repeats):
            for name, tree in trees.items():
                uri = _store(folder, name if store == "existing" else f"{name}-{repeat}")
                found[name].append(one_start(tree, Path(folder), uri, to_end=to_end))
                ended = f", ended at {found[name][-1][ENDED]:.1f} s" if to_end else ""
                print(f"{name} #{repeat + 1}: first step at {found[name][-1][FIRST_STEP]:.2f} s{ended}", flush=True)
    return found


def _store(folder: str, name: str) -> str:
    (Path(folder) / name).mkdir(exist_ok=True)
    return f"sqlite:///{Path(folder) / name / 'mlflow.db'}"


def medians(starts: list[dict[str, float]]) -> dict[str, float]:
    return {phase: statistics.median(s[phase] for s in starts) for phase in PHASES if all(phase in s for s in starts)}


def table(found: dict[str, list[dict[str, float]]]) -> list[str]:
    """Markdown: per phase, the median seconds from the start to it, and the phase's own length, for each tree."""
    names = list(found)
    median = {name: medians(starts) for name, starts in found.items()}
    head = "| phase (first mark) | " + " | ".join(f"{n}: at (s) | {n}: phase (s)" for n in names) + " |"
    lines = [head, "|---|" + "---|---|" * len(names)]
    previous = {name: 0.0 for name in names}
    for phase in PHASES:
        cells = []
        for name in names:
            at = median[name].get(phase)
            if at is None:
                cells.append(" | ")
                continue
            cells.append(f"{at:.2f} | {at - previous[name]:.2f}")
            previous[name] = at
        if any(cell.strip(" |") for cell in cells):
            lines.append(f"| {phase} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--trees", default=f"now={REPO}", metavar="NAME=DIR,...",
                        help="checkouts of ablate to compare, started in turn (default: this one)")
    parser.add_argument("--store", choices=("new", "existing"), default="new",
                        help="a fresh store each start (the first run of a study), or one store reused")
    parser.add_argument("--to-end", action="store_true", help="let each run finish: its wall time too")
    args = parser.parse_args()
    trees = {name: Path(path).resolve() for name, path in (item.split("=", 1) for item in args.trees.split(","))}
    load = os.getloadavg()
    found = measure(trees, args.repeats, args.store, args.to_end)
    print(f"\nablate run {STUDY}, {args.store} store, medians of {args.repeats}; load average "
          f"{load[0]:.2f} before, {os.getloadavg()[0]:.2f} after\n")
    print("\n".join(table(found)))


if __name__ == "__main__":
    main()
