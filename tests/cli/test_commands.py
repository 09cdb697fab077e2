"""End to end through the CLI: run into a throwaway MLflow store, resume, report, failures."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from ablate.cli import main
from tests.conftest import REPO, TINY_STUDY


@pytest.fixture
def tiny(write_study):
    return write_study(TINY_STUDY)


def _runs(store: str, experiment: str = "tiny") -> pd.DataFrame:
    mlflow.set_tracking_uri(store)
    return mlflow.search_runs(experiment_names=[experiment])


@pytest.mark.slow
def test_run_logs_parent_and_child_runs_visible_to_mlflow(tiny, store, capsys):
    assert main(["run", str(tiny), "--tracking-uri", store]) == 0
    out = capsys.readouterr().out
    assert "4 trials: 0 already done, 4 to train" in out and "mlflow ui" in out
    assert "tiny: 4 of 4 planned trials finished" in out and "linear" in out  # the table, fitted to the terminal

    runs = _runs(store)
    parents = runs[runs["tags.role"] == "parent"]
    children = runs[runs["tags.role"] == "trial"]
    assert len(parents) == 1 and len(children) == 4
    assert set(runs["status"]) == {"FINISHED"}
    assert set(children["tags.mlflow.parentRunId"]) == {parents["run_id"].iloc[0]}
    assert sorted(children["tags.stage"]) == ["linear", "linear", "mlp", "mlp"]
    for column in ("tags.seed", "tags.trial_hash", "tags.ablate_version", "tags.torch_version", "tags.device"):
        assert children[column].notna().all(), column
    assert (children["params.model.kind"].isin(["linear", "mlp"])).all()
    assert set(children["params.train.epochs"]) == {"2"}
    assert (children["metrics.test_accuracy"] > 0.5).all()
    assert (children["metrics.params_count"] > 0).all() and (children["metrics.train_seconds"] > 0).all()

    client = MlflowClient(store)
    history = client.get_metric_history(children["run_id"].iloc[0], "val_accuracy")
    assert sorted(m.step for m in history) == [1, 2]
    parent_artifacts = {a.path for a in client.list_artifacts(parents["run_id"].iloc[0])}
    assert {"study.toml", "plan.json"} <= parent_artifacts


@pytest.mark.slow
def test_second_run_trains_nothing_and_changed_spec_runs_only_new_trials(tiny, store, capsys, write_study):
    assert main(["run", str(tiny), "--tracking-uri", store]) == 0
    capsys.readouterr()
    assert main(["run", str(tiny), "--tracking-uri", store]) == 0
    assert "All 4 trials already done: nothing to train." in capsys.readouterr().out
    assert len(_runs(store)) == 5  # no new parent, no new child

    grown = write_study(
        TINY_STUDY + '\n[[stage]]\nname = "bn"\nmodel = { kind = "mlp", hidden = [32], batchnorm = true }\n'
    )
    assert main(["run", str(grown), "--tracking-uri", store]) == 0
    assert "6 trials: 4 already done, 2 to train" in capsys.readouterr().out
    children = _runs(store).query("`tags.role` == 'trial'")
    assert len(children) == 6 and children["tags.trial_hash"].is_unique

    # The arm removed again: nothing to train, but the study now stands without it, and the report must say so.
    assert main(["run", str(write_study(TINY_STUDY)), "--tracking-uri", store]) == 0
    assert "the study as it now stands is recorded" in capsys.readouterr().out
    parents = _runs(store).query("`tags.role` == 'parent'")
    assert len(parents) == 3 and set(parents["status"]) == {"FINISHED"}
    assert main(["report", "--tracking-uri", store, "--study", "tiny", "--format", "csv", "--no-figures"]) == 0
    assert list(pd.read_csv(io.StringIO(capsys.readouterr().out))["stage"]) == ["linear", "mlp"]
    assert main(["run", str(tiny), "--tracking-uri", store]) == 0  # unchanged since: nothing recorded
    assert len(_runs(store).query("`tags.role` == 'parent'")) == 3


@pytest.mark.slow
def test_report_formats_parse_back(tiny, store, tmp_path, capsys):
    assert main(["run", str(tiny), "--tracking-uri", store]) == 0
    capsys.readouterr()
    assert main(["report", "--tracking-uri", store, "--out", str(tmp_path / "t.md")]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"wrote {tmp_path / 't.md'}"
    markdown = (tmp_path / "t.md").read_text()
    assert markdown.startswith("## tiny") and "4 of 4 planned trials finished." in markdown
    table = markdown.split("\n\n| ", 1)[1].split("\n\n", 1)[0]  # the comparison table, the file's first
    rows = [line for line in table.splitlines() if line.startswith(("linear", "| linear", "| mlp"))]
    assert len(rows) == 2 and "± " in rows[0] and "`ablate run" in markdown
    assert "| arm | 0 | 1 |" in markdown and "Saved models" in markdown  # per-class table, where the models are

    assert main(["report", "--tracking-uri", store, "--study", "tiny", "--format", "csv"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(table["stage"]) == ["linear", "mlp"] and list(table["n"]) == [2, 2]
    assert pd.isna(table.loc[0, "delta_vs_baseline"])  # the baseline itself
    # every seed ran in both arms, so the paired mean difference is the difference of the means
    assert table.loc[1, "delta_vs_baseline"] == pytest.approx(
        table.loc[1, "test_accuracy_mean"] - table.loc[0, "test_accuracy_mean"]
    )

    assert main(["report", "--tracking-uri", store, "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["stage"] for r in records] == ["linear", "mlp"]
    accuracy = _runs(store).query("`tags.stage` == 'mlp'")["metrics.test_accuracy"] * 100
    assert records[1]["test_accuracy_mean"] == pytest.approx(accuracy.mean())
    assert records[1]["test_accuracy_std"] == pytest.approx(accuracy.std(ddof=1))


@pytest.mark.slow
def test_report_errors_exit_2_and_create_nothing(tiny, tmp_path, capsys):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"  # none yet
    assert main(["report", "--tracking-uri", store]) == 2
    assert "no MLflow store" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()
    assert main(["run", str(tiny), "--tracking-uri", store]) == 0
    capsys.readouterr()
    assert main(["report", "--tracking-uri", store, "--study", "tinny"]) == 2
    assert "no study named 'tinny'" in (err := capsys.readouterr().err) and "did you mean 'tiny'" in err


@pytest.mark.slow
def test_failing_trial_is_recorded_and_the_study_goes_on(tiny, store, capsys, monkeypatch):
    monkeypatch.setenv("ABLATE_TEST_FAULTS", '{"mlp:1": "raise"}')  # inherited by the worker processes
    assert main(["run", str(tiny), "--tracking-uri", store]) == 1
    out = capsys.readouterr().out
    assert "FAILED (error) mlp seed 1" in out
    runs = _runs(store).query("`tags.role` == 'trial'")
    failed = runs[runs["status"] == "FAILED"]
    assert len(failed) == 1 and failed["tags.error"].iloc[0] == "RuntimeError: injected fault"
    assert failed["tags.reason"].iloc[0] == "error"
    assert (runs["status"] == "FINISHED").sum() == 3
    artifacts = {a.path for a in MlflowClient(store).list_artifacts(failed["run_id"].iloc[0])}
    assert "traceback.txt" in artifacts

    monkeypatch.delenv("ABLATE_TEST_FAULTS")
    assert main(["run", str(tiny), "--tracking-uri", store]) == 0
    assert "4 trials: 3 already done, 1 to train" in capsys.readouterr().out


def test_plan_help_and_schema_never_import_torch_or_mlflow(tiny):
    probe = (
        "import sys, contextlib, io\n"
        "from ablate.cli import main\n"
        "for argv in (['plan', sys.argv[1]], ['plan', sys.argv[1], '--format', 'json'], ['schema'], ['--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit:\n"
        "            pass\n"
        "heavy = [m for m in ('torch', 'mlflow', 'pandas', 'optuna') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe, str(tiny)], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_plan_json_lists_every_trial(tiny, capsys):
    assert main(["plan", str(tiny), "--format", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["count"] == 4
    assert [t["stage"] for t in document["trials"]] == ["linear", "linear", "mlp", "mlp"]
    assert document["trials"][2]["params_count"] == 784 * 32 + 32 + 32 * 10 + 10
    assert document["trials"][2]["settings"]["model"]["hidden"] == [32]


def test_plan_table_shows_hash_stage_seed_and_differing_settings(tiny, capsys):
    assert main(["plan", str(tiny)]) == 0
    out = capsys.readouterr().out
    assert "4 trials: 2 stages × 2 seeds" in out
    header = next(line for line in out.splitlines() if "hash" in line)
    for column in ("stage", "seed", "hidden", "kind", "params"):
        assert column in header
    assert "epochs" not in header  # the same in every trial


def test_version_and_help():
    for argv, needle in ((["--version"], "ablate 0.1.0"), (["--help"], "exit codes")):
        done = subprocess.run([sys.executable, "-m", "ablate", *argv], capture_output=True, text=True, cwd=REPO)
        assert done.returncode == 0 and needle in done.stdout
