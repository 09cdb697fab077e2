"""Trained models: kept as MLflow models that reproduce their run's test predictions, one per arm under `best`,
exported as files that load with torch alone, registered on request."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import mlflow
import mlflow.pytorch
import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus

from ablate import datasets
from ablate.cli import main
from ablate.engine import deployable, train_pack, train_trial
from ablate.spec import DataSettings, EarlyStopping, MLPModel, TrainSettings, TrialSettings
from tests.conftest import DATA_DIR, TINY_STUDY

CPU = torch.device("cpu")
DATA = DataSettings(val_size=500, train_limit=1000, test_limit=500)  # TINY_STUDY's data


@pytest.fixture(scope="module")
def data():
    torch.set_num_threads(1)
    return datasets.load("mnist", DATA, DATA_DIR, CPU)


def _scores(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(images)


def _settings(seed: int, model: MLPModel, **train) -> TrialSettings:
    return TrialSettings("mnist", seed, DATA, model, replace(TrainSettings(epochs=3, batch_size=64), **train))


def test_a_packed_trials_model_is_the_network_its_single_run_ends_with(data, float64):
    """Batch norm, dropout and early stopping (restored weights) included: the saved network of a packed trial gives
    its single run's scores within float tolerance, and each reproduces its own test predictions. In float64 (the
    conftest's float64): three epochs at a real rate in float32 drift apart by each host's summation orders."""
    data = float64(data)
    stop = EarlyStopping(metric="val_accuracy", patience=1, min_delta=1.0)  # never improves after epoch 1
    sgd = dict(optimizer="sgd", lr=0.05, momentum=0.9)  # Adam amplifies float noise in BN's ~0 gradients
    trials = [
        _settings(0, MLPModel(hidden=(32,), batchnorm=True, dropout=0.2), **sgd),
        _settings(1, MLPModel(hidden=(32,), batchnorm=True), early_stopping=stop, **sgd),
    ]
    packed = train_pack(trials, data, CPU)
    singles = [train_trial(t, data, CPU) for t in trials]
    for single, pack in zip(singles, packed):
        mine, theirs = deployable(single.model, data), deployable(pack.model, data)
        assert torch.allclose(_scores(mine, data.test.images), _scores(theirs, data.test.images), atol=1e-4)
        assert (_scores(mine, data.test.images).argmax(1).numpy() == single.predictions).all()
        assert (_scores(theirs, data.test.images).argmax(1).numpy() != pack.predictions).sum() <= 1
    for result in (singles[1], packed[1]):  # stopped after epoch 2, epoch 1's weights tested: both are kept
        assert result.tested_epoch == 1 and len(result.history) == 2 and result.last_model is not None
        assert not torch.equal(result.model[1].weight, result.last_model[1].weight)
    assert singles[0].last_model is None and packed[0].last_model is None  # nothing restored: one model


def _study(write_study, models: str | None, name: str = "tiny") -> Path:
    table = f'\n[tracking]\nmodels = "{models}"\n' if models else ""
    return write_study(TINY_STUDY.replace('name = "tiny"', f'name = "{name}"') + table, f"{name}.toml")


def _trial_runs(store: str, study: str = "tiny") -> list:
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name(study)
    return client.search_runs([experiment.experiment_id], "tags.role = 'trial'")


def _logged_predictions(run_id: str, tracking_uri: str | None = None) -> np.ndarray:
    """The run's logged test predictions; `tracking_uri` None: MLflow's current one (the caller set it)."""
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="test_outputs.npz",
                                               tracking_uri=tracking_uri)
    return np.load(path)["predictions"]


def _logged_models_ever(store: str) -> list[tuple[str, str, str]]:
    """(id, lifecycle stage, artifact location) of every logged model the store holds, deleted ones included (MLflow's
    own search leaves those out)."""
    import sqlite3

    connection = sqlite3.connect(store.removeprefix("sqlite:///"))
    try:
        return connection.execute("SELECT model_id, lifecycle_stage, artifact_location FROM logged_models").fetchall()
    finally:
        connection.close()


def _has(client: MlflowClient, run_id: str, folder: str) -> bool:
    return folder in {a.path for a in client.list_artifacts(run_id)}


@pytest.mark.slow
def test_every_saved_model_loads_back_and_predicts_its_logged_test_predictions(write_study, store, data, tmp_path):
    """models = "all": each trial run holds ablate's files and an MLflow 3 logged model (signature, input example, the
    run's final metrics), which mlflow.pytorch.load_model("runs:/<run>/model") — the logged model's files merged with
    the run's — turns back into its run's very test predictions, from float32 pixel values; a packed run's model gives
    the unpacked run's scores within float tolerance."""
    study = _study(write_study, "all")
    assert main(["run", str(study), "--tracking-uri", store]) == 0
    packed_store = f"sqlite:///{tmp_path / 'packed.db'}"
    assert main(["run", str(study), "--tracking-uri", packed_store, "--pack", "2", "--max-workers", "1"]) == 0
    mlflow.set_tracking_uri(store)
    client = MlflowClient(store)
    runs = _trial_runs(store)
    assert len(runs) == 4 and {r.data.tags["model"] for r in runs} <= {"saved", "best"}
    logged = _logged_models(store)
    assert sorted(m.source_run_id for m in logged) == sorted(r.info.run_id for r in runs)
    scores = {}
    for run in runs:
        own = os.listdir(Path(run.info.artifact_uri.removeprefix("file://")) / "model")
        assert sorted(own) == ["ablate.json", "probe.pt", "state_dict.pt"]  # what ablate loads, in the run's folder
        model = next(m for m in logged if m.source_run_id == run.info.run_id)
        assert model.name == "model" and model.status == LoggedModelStatus.READY and model.tags["model"] in (
            "saved", "best")
        assert [o.model_id for o in run.outputs.model_outputs] == [model.model_id]
        linked = {m.key: m.value for m in model.metrics}
        assert linked["test_accuracy"] == run.data.metrics["test_accuracy"] and "params_count" in linked
        assert {m.dataset_name for m in model.metrics if m.key == "test_accuracy"} == {"mnist"}
        uri = f"runs:/{run.info.run_id}/model"  # the torch.export program, never a pickle
        info = mlflow.models.get_model_info(uri)
        assert info.signature.inputs.to_dict()[0]["tensor-spec"] == {"dtype": "float32", "shape": (-1, 1, 28, 28)}
        assert info.saved_input_example_info is not None and info.model_id == model.model_id
        loaded = mlflow.pytorch.load_model(uri)
        scores[run.data.tags["trial_hash"]] = _scores(loaded, data.test.images.float())
        assert (scores[run.data.tags["trial_hash"]].argmax(1).numpy() == _logged_predictions(run.info.run_id)).all()
    assert sum(r.data.tags["model"] == "best" for r in runs) == 2  # one per arm; `all` deletes none
    assert sorted(m.tags["model"] for m in logged) == ["best", "best", "saved", "saved"]
    assert len(client.search_logged_models([runs[0].info.experiment_id], filter_string="metrics.test_accuracy > 0.3",
                                           order_by=[{"field_name": "metrics.test_accuracy"}])) == 4
    mlflow.set_tracking_uri(packed_store)
    for run in _trial_runs(packed_store):
        assert run.data.tags["pack_size"] == "2"
        packed = _scores(mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/model"), data.test.images.float())
        assert torch.allclose(packed, scores[run.data.tags["trial_hash"]], atol=1e-4)


def _logged_models(store: str, study: str = "tiny") -> list:
    client = MlflowClient(store)
    return client.search_logged_models([client.get_experiment_by_name(study).experiment_id])


@pytest.mark.slow
def test_best_keeps_one_model_per_arm_and_export_writes_it_for_torch_alone(write_study, store, data, tmp_path, capsys):
    """The default, `best`: per arm exactly the run with the best test accuracy holds a model, the other's is
    deleted; `ablate export` writes it as files whose torch.export program gives the logged predictions without
    MLflow, and whose state dict and settings rebuild the network; --register makes registered-model versions."""
    study = _study(write_study, None)
    assert main(["run", str(study), "--tracking-uri", store]) == 0
    client = MlflowClient(store)
    runs = _trial_runs(store)
    listed = _logged_models(store)
    for arm in ("linear", "mlp"):
        mine = sorted((r for r in runs if r.data.tags["stage"] == arm), key=lambda r: -r.data.metrics["test_accuracy"])
        assert [r.data.tags["model"] for r in mine] == ["best", "pruned"]
        assert _has(client, mine[0].info.run_id, "model") and not _has(client, mine[1].info.run_id, "model")
        kept = [m for m in listed if m.tags["stage"] == arm]  # the pruned run's logged model went with its files
        assert [(m.source_run_id, m.tags["model"]) for m in kept] == [(mine[0].info.run_id, "best")]
    gone = [(stage, location) for model_id, stage, location in _logged_models_ever(store)
            if model_id not in {m.model_id for m in listed}]  # saved while its run was its arm's best so far
    assert all(stage == "deleted" and not Path(location.removeprefix("file://")).exists() for stage, location in gone)
    assert main(["run", str(study), "--tracking-uri", store]) == 0  # nothing to train, nothing changes
    assert sorted(r.data.tags["model"] for r in _trial_runs(store)) == ["best", "best", "pruned", "pruned"]
    assert sorted(m.model_id for m in _logged_models(store)) == sorted(m.model_id for m in listed)

    out = tmp_path / "exported"
    capsys.readouterr()
    assert main(["export", "--study", "tiny", "--out", str(out), "--register", "--tracking-uri", store]) == 0
    printed = capsys.readouterr().out
    assert "linear: run" in printed and "registered as tiny-mlp version 1" in printed
    serve = next(line for line in printed.splitlines() if line.startswith("serve one: "))  # tests/test_shell runs one
    assert serve.startswith(f"serve one: MLFLOW_TRACKING_URI={store} ")
    assert serve.endswith("mlflow models serve -m models:/tiny-linear/1 --env-manager local --port 5001")
    from ablate.export import rebuild

    for arm in ("linear", "mlp"):
        folder = out / arm
        assert {p.name for p in folder.iterdir()} == {"README.md", "ablate.json", "model.pt2", "state_dict.pt"}
        about = json.loads((folder / "ablate.json").read_text())
        program = torch.export.load(str(folder / "model.pt2")).module()
        logged = _logged_predictions(about["run_id"])
        assert (_scores(program, data.test.images).argmax(1).numpy() == logged).all()
        assert _scores(program, data.test.images[:1]).shape == (1, 10)  # any batch size
        rebuilt = rebuild(about, torch.load(folder / "state_dict.pt", weights_only=True))
        assert (_scores(rebuilt, data.test.images).argmax(1).numpy() == logged).all()
    assert {m.name for m in client.search_registered_models()} == {"tiny-linear", "tiny-mlp"}
    versions = {v.source for arm in ("linear", "mlp") for v in client.search_model_versions(f"name='tiny-{arm}'")}
    assert versions == {f"models:/{m.model_id}" for m in listed}  # the registry's versions are the logged models


@pytest.mark.slow
def test_models_none_keeps_none_and_export_says_what_to_do(write_study, store, capsys):
    study = _study(write_study, "none")
    assert main(["run", str(study), "--tracking-uri", store]) == 0
    client = MlflowClient(store)
    assert not any(_has(client, r.info.run_id, "model") or "model" in r.data.tags for r in _trial_runs(store))
    capsys.readouterr()
    assert main(["export", "--study", "tiny", "--out", "x", "--tracking-uri", store]) == 2
    assert 'models = "none"' in capsys.readouterr().err
    assert main(["export", "--study", "nope", "--out", "x", "--tracking-uri", store]) == 2
    assert "no study 'nope'" in capsys.readouterr().err
    assert main(["export", "--study", "tiny", "--tracking-uri", store]) == 2  # neither --out nor --register


TINY_CNN = (
    TINY_STUDY.replace('name = "tiny"', 'name = "tinycnn"').split("[[stage]]")[0]
    + """
[model]
kind = "cnn"

[[stage]]
name = "plain"
model = { head = "gap", blocks = [
    { out = 8, pool = true }, { out = 16, pool = true }, { out = 10, activation = "none" }] }

[[stage]]
name = "bn"
model = { batchnorm = true, head = "gap", blocks = [{ out = 8, pool = true }, { out = 16, pool = true },
          { out = 10, activation = "none", batchnorm = false }] }
"""
)


def _ink(path: Path) -> float:
    """The spread of a PNG's pixel values: 0 for a blank image."""
    import matplotlib.image

    return float(matplotlib.image.imread(path)[..., :3].std())


@pytest.mark.slow
def test_report_looks_inside_the_best_cnn_and_tables_accuracy_per_class(
    write_study, store, tmp_path, monkeypatch, capsys
):
    """The best CNN arm's saved model gives the filters figure (its first layer's 8 filters) and the activation maps
    (input + its 3 conv blocks), both logged to that model's run; the markdown tables accuracy per class and arm and
    says where the models are."""
    from ablate.report import block_outputs

    study = write_study(TINY_CNN, "tinycnn.toml")
    assert main(["run", str(study), "--tracking-uri", store]) == 0
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--tracking-uri", store, "--out", str(tmp_path / "out" / "t.md")]) == 0
    out = tmp_path / "out"
    for name in ("filters", "activations", "predictions", "per-class"):
        assert _ink(out / f"t-{name}.png") > 0.05, name  # named after the report's file
    text = (out / "t.md").read_text()
    assert "| arm | 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 |" in text and "| **plain** |" in text
    assert "ablate export --study tinycnn" in text
    runs = _trial_runs(store, "tinycnn")
    best = [r for r in runs if r.data.tags.get("model") == "best"]
    assert len(best) == 2
    client = MlflowClient(store)
    logged = {a.path for r in best for a in client.list_artifacts(r.info.run_id, "figures")}
    assert logged == {"figures/tinycnn-filters.png", "figures/tinycnn-activations.png"}
    _a_pickle_in_the_store_gives_no_figures_and_runs_nothing(store, best, tmp_path, capsys)
    from ablate.models import build_model
    from ablate.spec import load_study

    net = build_model(load_study(study).stages[1].model, datasets.get("mnist"))
    shapes = [tuple(o.shape[1:]) for o in block_outputs(net, torch.zeros(2, 1, 28, 28))]
    assert shapes == [(8, 13, 13), (16, 5, 5), (10, 3, 3)]  # conv + BN + ReLU + pool, twice; the last conv alone


def _a_pickle_in_the_store_gives_no_figures_and_runs_nothing(store: str, best: list, tmp_path: Path, capsys) -> None:
    """The best runs' models replaced by pickles whose payload would create a marker file (as anyone who can write to
    the store could): the report runs nothing, names the filters and activations it does not draw with why (one line
    each), and reports the rest."""
    from tests.export.test_store_safety import Payload

    marker = tmp_path / "payload-ran"
    for run in best:
        folder = Path(run.info.artifact_uri.removeprefix("file://")) / "model"
        for name in ("state_dict.pt", "probe.pt"):
            (folder / name).unlink()
        (folder / "data").mkdir(exist_ok=True)
        torch.save(Payload(marker), folder / "data" / "model.pth")
        (folder / "data" / "pickle_module_info.txt").write_text("mlflow.pytorch.pickle_module")
    capsys.readouterr()
    assert main(["report", "--tracking-uri", store, "--out", str(tmp_path / "again" / "t.md")]) == 0
    assert not marker.exists() and not (tmp_path / "again" / "t-filters.png").exists()
    assert (tmp_path / "again" / "t-per-class.png").exists()
    err = capsys.readouterr().err.splitlines()
    assert [line.split(" not drawn: ")[0] for line in err] == ["ablate report: tinycnn: first-layer filters",
                                                                "ablate report: tinycnn: conv block outputs"], err
    assert all("pickle" in line for line in err), err
    assert "- first-layer filters, conv block outputs — run " in (tmp_path / "again" / "t.md").read_text()


@pytest.mark.slow
def test_a_study_without_saved_models_still_reports(write_study, store, tmp_path, monkeypatch):
    study = write_study(TINY_CNN.replace("[model]", '[tracking]\nmodels = "none"\n\n[model]'), "tinycnn.toml")
    assert main(["run", str(study), "--tracking-uri", store]) == 0
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--tracking-uri", store, "--out", str(tmp_path / "t.md")]) == 0
    assert not (tmp_path / "t-filters.png").exists() and (tmp_path / "t-per-class.png").exists()
    assert "Saved models" not in (tmp_path / "t.md").read_text()
