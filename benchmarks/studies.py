"""Whole studies end to end, as a user runs them: `ablate run` with MLflow logging, timed from the
command line to its exit, under several execution settings (workers per device, packing).

    python benchmarks/studies.py --json studies.json [--variants linearity:1,ablations:2:16 ...] [--quick]

A variant is STUDY:WORKERS_PER_DEVICE[:PACK]. Each runs in a fresh SQLite store in a temporary
folder (so nothing is resumed), and afterwards the store is read back with plain SQL: how many
trial runs FINISHED, and each trial's test accuracy (stage, seed), so the accuracies can be set
beside another machine's. `--quick` trains 1 epoch on 2,048 images (checks the script on a CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT = ["linearity:1", "linearity:2", "linearity:4", "ablations:2", "ablations:4", "ablations:2:8",
           "ablations:2:16", "ablations:2:32"]


def quick_study(study: Path, folder: Path) -> Path:
    """The study at 1 epoch on 2,048 training images, for checking this script."""
    text = study.read_text().replace("epochs = 5", "epochs = 1")
    text = text.replace("[data]\n", "[data]\ntrain_limit = 2048\n") if "[data]\n" in text else \
        text + "\n[data]\ntrain_limit = 2048\n"
    quick = folder / study.name
    quick.write_text(text)
    return quick


def trials_in(store: Path) -> list[dict]:
    """Every trial run of the store: status, stage, seed and test accuracy, read with SQL (no MLflow import)."""
    query = """
        SELECT r.run_uuid, r.status,
               (SELECT value FROM tags t WHERE t.run_uuid = r.run_uuid AND t.key = 'stage'),
               (SELECT value FROM tags t WHERE t.run_uuid = r.run_uuid AND t.key = 'seed'),
               (SELECT value FROM latest_metrics m WHERE m.run_uuid = r.run_uuid AND m.key = 'test_accuracy'),
               (SELECT value FROM latest_metrics m WHERE m.run_uuid = r.run_uuid AND m.key = 'train_seconds')
        FROM runs r
        WHERE r.lifecycle_stage = 'active'
          AND EXISTS (SELECT 1 FROM tags t WHERE t.run_uuid = r.run_uuid AND t.key = 'role' AND t.value = 'trial')
    """
    with sqlite3.connect(store) as db:
        return [{"status": status, "stage": stage, "seed": int(seed), "test_accuracy": accuracy,
                 "train_seconds": seconds} for _, status, stage, seed, accuracy, seconds in db.execute(query)]


def run_variant(variant: str, quick: bool, folder: Path) -> dict:
    name, workers, *pack = variant.split(":")
    study = REPO / "studies" / f"{name}.toml"
    if quick:
        study = quick_study(study, folder)
    store = folder / f"{variant.replace(':', '-')}.db"
    command = [sys.executable, "-m", "ablate", "run", str(study), "--tracking-uri", f"sqlite:///{store}",
               "--workers-per-device", workers, *(["--pack", pack[0]] if pack else [])]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True,
                          env={**os.environ, "ABLATE_DATA_DIR": os.environ.get("ABLATE_DATA_DIR", str(REPO / "data"))})
    wall = time.perf_counter() - started
    trials = trials_in(store) if store.exists() else []
    finished = sum(t["status"] == "FINISHED" for t in trials)
    result = {"variant": variant, "study": name, "workers_per_device": int(workers),
              "pack": int(pack[0]) if pack else None,
              "exit": done.returncode, "wall_s": wall, "trials": len(trials), "finished": finished,
              "runs_per_hour": 3600 * finished / wall, "per_trial": trials,
              "command": " ".join(["ablate run", f"studies/{name}.toml", *command[7:]]),
              "output_tail": (done.stdout + done.stderr)[-3000:]}
    print(json.dumps({k: v for k, v in result.items() if k not in ("per_trial", "output_tail")}), flush=True)
    if done.returncode != 0:
        print(result["output_tail"], flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", required=True, metavar="FILE")
    parser.add_argument("--variants", nargs="*", default=DEFAULT, metavar="STUDY:K[:PACK]")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for variant in args.variants:
            results.append(run_variant(variant, args.quick, Path(folder)))
            Path(args.json).write_text(json.dumps(results, indent=1))  # what is done survives a later time-out
    bad = [r["variant"] for r in results if r["exit"] != 0 or r["finished"] != r["trials"] or not r["trials"]]
    print(f"{len(results)} variants; not all trials FINISHED in: {bad or 'none'}", flush=True)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
