"""`ablate check`: a healthy pipeline passes; broken ones — a dead optimiser, labels misaligned with their images —
fail, each on the check meant to catch it."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow import MlflowClient

from ablate.cli import main
from tests.conftest import TINY_STUDY


def _check(capsys, study, *args) -> tuple[int, str]:
    code = main(["check", str(study), *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _verdicts(out: str) -> dict[str, str]:
    """'linear/overfit 128 examples' → 'PASS' | 'FAIL' | 'n/a'."""
    verdicts, stage = {}, None
    for line in out.splitlines():
        if not line.startswith(" ") and " (seed " in line:
            stage = line.split(" (seed ")[0]
        elif line.startswith("  ") and ":" in line:
            verdict, name = line.strip().split(None, 1)
            verdicts[f"{stage}/{name.split(':')[0]}"] = verdict
    return verdicts


@pytest.fixture(autouse=True)
def _fresh_data_cache(monkeypatch):
    """Each test reads the data as its pipeline does (the resident copy is cached per process)."""
    from ablate.datasets import _resident

    monkeypatch.setattr(_resident, "_CACHE", {})


def test_a_healthy_pipeline_passes_every_check_and_is_recorded(write_study, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, out = _check(capsys, write_study(TINY_STUDY), "--tracking-uri", uri)
    assert code == 0, out
    assert set(_verdicts(out).values()) == {"PASS"} and len(_verdicts(out)) == 8, out
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert sorted(r.data.tags["stage"] for r in runs) == ["linear", "mlp"]
    assert {r.data.tags["role"] for r in runs} == {"check"} and {r.info.status for r in runs} == {"FINISHED"}
    assert runs[0].data.metrics["check_overfit_128_examples"] >= 0.99
    assert main(["run", str(tmp_path / "study.toml"), "--tracking-uri", uri]) == 0  # check runs are not trials
    assert "4 trials: 0 already done" in capsys.readouterr().out


def test_a_dead_optimiser_fails_the_overfit_and_learning_checks(write_study, capsys):
    study = write_study(TINY_STUDY.replace("[train]\n", "[train]\nlr = 1e-12\n"))
    code, out = _check(capsys, study, "--no-record")
    verdicts = _verdicts(out)
    assert code == 1, out
    assert verdicts["linear/overfit 128 examples"] == verdicts["mlp/overfit 128 examples"] == "FAIL"
    assert verdicts["linear/real labels"] == "FAIL" and verdicts["linear/initial loss"] == "PASS"


def test_labels_misaligned_with_their_images_fail_the_real_label_check(write_study, capsys, monkeypatch):
    """A reader off by one: every training label belongs to the next image. A model memorises 128 such pairs all the
    same (the overfit check passes), but learns nothing that holds on the test set."""
    from ablate.datasets import _resident

    real = _resident.read_arrays

    def off_by_one(name, root, *args, **kwargs):
        arrays = dict(real(name, root, *args, **kwargs))
        arrays["train_labels"] = np.roll(arrays["train_labels"], 1)
        return arrays

    monkeypatch.setattr(_resident, "read_arrays", off_by_one)
    code, out = _check(capsys, write_study(TINY_STUDY), "--no-record")
    verdicts = _verdicts(out)
    assert code == 1, out
    assert verdicts["linear/real labels"] == verdicts["mlp/real labels"] == "FAIL"
    assert verdicts["mlp/overfit 128 examples"] == "PASS"


def test_an_augmentation_that_destroys_the_signal_fails_the_fit(write_study, capsys):
    """Every training image shrunk to about one pixel: nothing of the digit is left to learn from (the MLP still
    reads a little from the dot's ink, 22% on real labels, so only the linear model must fail those too)."""
    study = write_study(TINY_STUDY.replace("[train]\n", "[train]\naugment = { scale = [0.05, 0.05] }\n"))
    code, out = _check(capsys, study, "--no-record")
    verdicts = _verdicts(out)
    assert code == 1, out
    assert verdicts["linear/overfit 128 examples"] == verdicts["mlp/overfit 128 examples"] == "FAIL", out
    assert verdicts["linear/real labels"] == "FAIL" and verdicts["mlp/initial loss"] == "PASS"
