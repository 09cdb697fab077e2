"""Nothing from the store runs code, and export deletes nothing it did not write.

Anyone who can write to a shared MLflow store can plant files in a run's artifacts. Here they plant pickles whose
payload would create a marker file: `ablate export` (and the report's figures, tests/export/test_saved_models.py) must
never create it, read what they can without unpickling, and refuse with one line and a documented exit code where no
safe copy of the model exists. Export writes only its own files, only inside --out.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import sys
import zipfile
from pathlib import Path

import mlflow.pytorch
import pytest
import torch
from mlflow import MlflowClient

from ablate import datasets
from ablate.cli import main
from ablate.errors import EXIT_BAD_INPUT, EXIT_STORE
from ablate.models import foreign_code
from tests.conftest import DATA_DIR, TINY_STUDY

OWN = {"README.md", "ablate.json", "model.pt2", "state_dict.pt"}  # what export writes for a network that exports


class Payload:
    """Unpickled, it calls os.system to create `marker`: what a planted pickle could do instead."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _model_folders(uri: str, study: str) -> dict[str, Path]:
    """Per arm, the folder of its best run's saved model in the store's artifacts (a local folder here)."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(study)
    runs = client.search_runs([experiment.experiment_id], "tags.role = 'trial' and tags.model = 'best'")
    return {run.data.tags["stage"]: Path(run.info.artifact_uri.removeprefix("file://")) / "model" for run in runs}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny study trained once, its best models kept: its store and each arm's model folder."""
    folder = tmp_path_factory.mktemp("trained")
    study = folder / "tiny.toml"
    study.write_text(TINY_STUDY)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ABLATE_DATA_DIR", str(DATA_DIR))
        assert main(["run", str(study), "--tracking-uri", uri]) == 0
    return uri, _model_folders(uri, "tiny")


@pytest.fixture
def planted(trained, tmp_path):
    """The trained store, whose model folders a test may plant files in: restored afterwards."""
    uri, folders = trained
    for arm, folder in folders.items():
        shutil.copytree(folder, tmp_path / "backup" / arm)
    yield uri, folders
    for arm, folder in folders.items():
        shutil.rmtree(folder)
        shutil.copytree(tmp_path / "backup" / arm, folder)


@pytest.fixture
def planted_before(trained, tmp_path):
    """A copy of the trained store as ablate kept models before it logged them as MLflow logged models (the MLflow
    model's files in the run's `model` folder, beside ablate's), whose model folders a test may plant files in."""
    uri = _copied_store(trained[0], tmp_path / "before")
    client = MlflowClient(uri)
    for model in client.search_logged_models([client.get_experiment_by_name("tiny").experiment_id]):
        folder = Path(client.get_run(model.source_run_id).info.artifact_uri.removeprefix("file://")) / model.name
        shutil.copytree(model.artifact_location.removeprefix("file://"), folder, dirs_exist_ok=True)
        client.delete_logged_model(model.model_id)
    return uri, _model_folders(uri, "tiny")


@pytest.fixture
def no_unpickling(monkeypatch):
    return _forbid_unpickling(monkeypatch)


def _forbid_unpickling(monkeypatch):
    """MLflow's and torch.export's loaders fail the test if called, and so does torch.load without
    weights_only=True: the ways a model file could run code. The real torch.load, for the test's own reads."""
    def refuse(*_, **__):
        raise AssertionError("ablate loaded a model by unpickling it")

    real_load = torch.load

    def weights_only(*args, **kwargs):
        assert kwargs.get("weights_only") is True, "torch.load without weights_only=True"
        return real_load(*args, **kwargs)

    monkeypatch.setattr(mlflow.pytorch, "load_model", refuse)
    monkeypatch.setattr(torch.export, "load", refuse)
    monkeypatch.setattr(torch, "load", weights_only)
    return real_load


def _export(uri: str, out: Path, capsys, *flags: str, study: str = "tiny") -> tuple[int, str]:
    capsys.readouterr()
    code = main(["export", "--study", study, "--out", str(out), "--tracking-uri", uri, *flags])
    return code, capsys.readouterr().err


def _one_line(err: str) -> str:
    assert err.startswith("ablate: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _plant_pickle(folder: Path, marker: Path, only: bool) -> None:
    """MLflow's pickle flavour as anyone who can write to the store could leave it: data/model.pth and the name of
    its pickle module; `only`: with nothing else to load the model from (as ablate kept a custom network once)."""
    (folder / "data").mkdir(exist_ok=True)
    torch.save(Payload(marker), folder / "data" / "model.pth")
    (folder / "data" / "pickle_module_info.txt").write_text("mlflow.pytorch.pickle_module")
    if only:
        for name in ("state_dict.pt", "probe.pt", "data/model.pt2"):
            (folder / name).unlink()


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


@pytest.mark.slow
def test_a_pickle_planted_beside_the_weights_is_never_loaded(planted, no_unpickling, tmp_path, capsys):
    uri, folders = planted
    marker = tmp_path / "payload-ran"
    _plant_pickle(folders["mlp"], marker, only=False)
    code, err = _export(uri, tmp_path / "out", capsys)
    assert code == 0, err
    assert not marker.exists()
    exported = no_unpickling(tmp_path / "out" / "mlp" / "state_dict.pt", weights_only=True)
    assert _same_weights(exported, no_unpickling(folders["mlp"] / "state_dict.pt", weights_only=True))


@pytest.mark.slow
def test_a_model_kept_only_as_a_pickle_is_refused_unless_trusted(planted_before, tmp_path, capsys):
    """Refused in one line naming the run's arm and the flag, with nothing written (not even the arm that loads);
    --trust-pickles is what lets the pickle run: here its payload, and MLflow then finds no model in it."""
    uri, folders = planted_before
    marker, out = tmp_path / "payload-ran", tmp_path / "out"
    _plant_pickle(folders["mlp"], marker, only=True)
    code, err = _export(uri, out, capsys)
    assert code == EXIT_STORE and not marker.exists()
    assert "(arm mlp)" in _one_line(err) and "only as a pickle" in err and "--trust-pickles" in err
    assert not out.exists()
    code, err = _export(uri, out, capsys, "--trust-pickles")
    assert marker.exists()
    assert code == EXIT_STORE and "MLflow could not load" in _one_line(err)


@pytest.mark.slow
def test_weights_planted_as_a_pickle_of_code_are_refused(planted, no_unpickling, tmp_path, capsys):
    uri, folders = planted
    marker = tmp_path / "payload-ran"
    torch.save(Payload(marker), folders["linear"] / "state_dict.pt")
    code, err = _export(uri, tmp_path / "out", capsys)
    assert code == EXIT_STORE and not marker.exists()
    assert "(arm linear)" in _one_line(err) and "state_dict.pt is not plain tensors" in err


@pytest.mark.slow
@pytest.mark.parametrize("where", ["model", "dataset"])
def test_a_factory_the_store_names_outside_your_own_code_is_never_called(planted, tmp_path, capsys, where):
    """ablate.json names the factory that rebuilds a custom network (or a dataset): one the store names is called
    only when it is the researcher's own code, never e.g. subprocess:run with the store's arguments."""
    uri, folders = planted
    marker = tmp_path / "factory-ran"
    about_path = folders["mlp"] / "ablate.json"
    about = json.loads(about_path.read_text())
    if where == "model":
        about["settings"]["model"] = {"kind": "custom", "factory": "subprocess:run",
                                      "kwargs": {"args": ["touch", str(marker)]}}
    else:
        about["settings"]["dataset"] = f'factory:subprocess:run{{"args":["touch","{marker}"]}}#0123456789ab'
    about_path.write_text(json.dumps(about))
    code, err = _export(uri, tmp_path / "out", capsys)
    assert code == EXIT_STORE and not marker.exists()
    assert f"{where} factory subprocess:run" in _one_line(err) and "standard library" in err


def _copied_store(uri: str, folder: Path) -> str:
    """The trained store (database and artifacts) copied into `folder`, its artifact locations pointing there."""
    source = Path(uri.removeprefix("sqlite:///")).parent
    shutil.copytree(source, folder)
    with sqlite3.connect(folder / "mlflow.db") as connection:
        for table, column in (("runs", "artifact_uri"), ("experiments", "artifact_location"),
                              ("logged_models", "artifact_location")):
            connection.execute(f"UPDATE {table} SET {column} = replace({column}, ?, ?)",
                               (source.as_uri(), folder.as_uri()))
    connection.close()
    return f"sqlite:///{folder / 'mlflow.db'}"


@pytest.mark.slow
def test_a_dataset_factory_key_the_store_names_outside_your_own_code_is_never_called_by_the_report(trained, tmp_path,
                                                                                                    capsys):
    """A trial's `dataset` param is the key the report's figures rebuild a factory's dataset from, the factory's
    arguments in it: one planted in the store naming subprocess:run is not called; the figures that need the data
    are skipped, each named in one line with the study, the factory and why, and the report is written as before."""
    marker = tmp_path / "factory-ran"
    uri = _copied_store(trained[0], tmp_path / "store")
    key = f'factory:subprocess:run{{"args":["touch","{marker}"]}}#0123456789ab'
    with sqlite3.connect(tmp_path / "store" / "mlflow.db") as connection:
        assert connection.execute("UPDATE params SET value = ? WHERE key = 'dataset'", (key,)).rowcount > 0
    connection.close()
    out = tmp_path / "report" / "tiny.md"
    capsys.readouterr()
    assert main(["report", "--tracking-uri", uri, "--study", "tiny", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert not marker.exists()
    assert "Traceback" not in err, err
    named = [line.split(" not drawn: ")[0].removeprefix("ablate report: tiny: ") for line in err.splitlines()]
    assert named == ["training images", "confusion matrix", "most confident mistakes", "test predictions",
                     "accuracy per class (figure and table)", "class templates"], err
    assert all("dataset factory subprocess:run (a module of Python's standard library)" in line
               for line in err.splitlines()), err
    drawn = {path.name for path in out.parent.glob("*.png")}
    assert {"tiny-curves.png", "tiny-test_accuracy.png"} <= drawn and "tiny-samples.png" not in drawn


@pytest.mark.slow
@pytest.mark.parametrize("where", ["own", "dataset", "model"])
def test_a_study_file_the_store_holds_is_read_for_macs_only_when_its_factories_are_your_own(trained, tmp_path, where):
    """A plan logged before MACs were recorded has them computed from the study file its parent run carries, and
    reading a study calls its factories: one naming a factory that is not your own code is not read (no MACs, as for
    a study that cannot be read here); the untouched study is read as before."""
    from ablate.report import load_study
    from ablate.tracking import Tracker

    marker = tmp_path / "factory-ran"
    uri = _copied_store(trained[0], tmp_path / "store")
    client = MlflowClient(uri)
    parent = client.search_runs([client.get_experiment_by_name("tiny").experiment_id], "tags.role = 'parent'")[0]
    artifacts = Path(parent.info.artifact_uri.removeprefix("file://"))
    plan = json.loads((artifacts / "plan.json").read_text())
    for stage in plan["stages"]:
        del stage["macs"]
    (artifacts / "plan.json").write_text(json.dumps(plan))
    study = artifacts / "tiny.toml"
    planted = f'factory = "subprocess:run", args = ["touch", "{marker}"]'
    if where == "dataset":
        study.write_text(study.read_text().replace("[study]\n", f"[study]\ndataset = {{ {planted} }}\n", 1))
    elif where == "model":
        linear = 'model = { kind = "linear" }'
        study.write_text(study.read_text().replace(linear, f'model = {{ kind = "custom", {planted} }}'))
    assert where == "own" or "subprocess:run" in study.read_text()
    macs = load_study(Tracker(uri), "tiny").table["macs"]
    assert not marker.exists()
    assert macs.notna().all() if where == "own" else macs.isna().all()


def test_a_dataset_key_read_from_a_store_calls_only_your_own_factory(tmp_path, monkeypatch):
    """datasets.get(key, from_store=True), what every reader of a store uses: your own factory is rebuilt from its
    key as before; a standard library function the key names is not called (ForeignFactory, with the reason)."""
    marker = tmp_path / "factory-ran"
    with pytest.raises(datasets.ForeignFactory, match="standard library"):
        datasets.get(f'factory:subprocess:run{{"args":["touch","{marker}"]}}#0123456789ab', from_store=True)
    assert not marker.exists()
    module = f"own_data_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{module}.py").write_text(
        "import numpy as np\n"
        "def tiny(n=4):\n"
        "    images = np.zeros((n, 1, 4, 4), dtype=np.uint8)\n"
        "    labels = np.arange(n) % 2\n"
        "    return images, labels, images, labels\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    key = datasets.from_factory(f"{module}:tiny", {"n": 6}).name
    datasets.unregister(key)
    try:
        assert datasets.get(key, from_store=True).train_size == 6
    finally:
        datasets.unregister(key)
        sys.modules.pop(module, None)


def test_foreign_code_tells_the_researchers_own_factories_from_the_rest():
    assert foreign_code("tests.custom_models:tiny_net") is None  # a module of the project, beside its studies
    assert "standard library" in foreign_code("subprocess:run")
    assert "standard library" in foreign_code("builtins:exec")
    assert "installed package" in foreign_code("torch.serialization:load")
    assert "ablate's own code" in foreign_code("ablate.cli:main")
    assert "not a function defined in" in foreign_code("tests.untraced_models:nn")  # torch's, imported there


@pytest.mark.slow
def test_a_model_saved_before_state_dicts_is_read_from_its_program_without_unpickling(planted_before, no_unpickling,
                                                                                       tmp_path, capsys):
    """Earlier ablate kept only MLflow's torch.export program: its weights are read from the archive's raw bytes
    (torch.export.load would unpickle parts of it), and export writes the very weights."""
    uri, folders = planted_before
    saved = no_unpickling(folders["mlp"] / "state_dict.pt", weights_only=True)
    for name in ("state_dict.pt", "probe.pt"):
        (folders["mlp"] / name).unlink()
    code, err = _export(uri, tmp_path / "out", capsys)
    assert code == 0, err
    assert _same_weights(no_unpickling(tmp_path / "out" / "mlp" / "state_dict.pt", weights_only=True), saved)


@pytest.mark.slow
def test_a_program_whose_weights_are_planted_pickles_is_refused(planted_before, no_unpickling, tmp_path, capsys):
    """A .pt2 archive may hold a weight as a pickle (torch.export.load unpickles it without weights_only, so the
    payload would run): ablate reads it with weights_only=True, which refuses it."""
    uri, folders = planted_before
    marker, program = tmp_path / "payload-ran", folders["mlp"] / "data" / "model.pt2"
    for name in ("state_dict.pt", "probe.pt"):
        (folders["mlp"] / name).unlink()
    _plant_pickled_weight(program, Payload(marker))
    code, err = _export(uri, tmp_path / "out", capsys)
    assert code == EXIT_STORE and not marker.exists()
    assert "(arm mlp)" in _one_line(err) and "is not a plain tensor" in err


def _plant_pickled_weight(program: Path, payload: Payload) -> None:
    """`program`'s first weight replaced by a pickle of `payload`, its JSON saying so."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with zipfile.ZipFile(program) as archive:
        records = {name: archive.read(name) for name in archive.namelist()}
    config_name = next(name for name in records if name.endswith("model_weights_config.json"))
    config = json.loads(records[config_name])
    entry = next(iter(config["config"].values()))
    entry["use_pickle"] = True
    records[config_name] = json.dumps(config).encode()
    records[f"{config_name.rsplit('/', 1)[0]}/{entry['path_name']}"] = buffer.getvalue()
    with zipfile.ZipFile(program, "w") as archive:
        for name, data in records.items():
            archive.writestr(name, data)


@pytest.mark.slow
def test_an_arm_folder_holding_files_is_refused_and_force_replaces_only_exports_own(planted, tmp_path, capsys):
    uri, _ = planted
    out = tmp_path / "out"
    mine = out / "mlp"
    (mine / "runs").mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    (mine / "model.ts").write_text("an earlier export's program")
    code, err = _export(uri, out, capsys)
    assert code == EXIT_BAD_INPUT and "--force" in _one_line(err) and "notes.txt" in err
    assert {p.name for p in mine.iterdir()} == {"runs", "notes.txt", "model.ts"} and not (out / "linear").exists()
    code, err = _export(uri, out, capsys, "--force")
    assert code == 0, err
    assert {p.name for p in mine.iterdir()} == OWN | {"runs", "notes.txt"}  # model.ts: export's own name, stale
    assert (mine / "notes.txt").read_text() == "mine"
    code, err = _export(uri, out, capsys)  # its own earlier export too: replaced only with --force
    assert code == EXIT_BAD_INPUT


@pytest.mark.slow
@pytest.mark.parametrize("link", ["arm folder", "own file"])
def test_export_follows_no_link_out_of_out(planted, tmp_path, capsys, link):
    uri, _ = planted
    elsewhere, out = tmp_path / "elsewhere", tmp_path / "out"
    elsewhere.mkdir()
    (elsewhere / "thesis.tex").write_text("keep")
    out.mkdir()
    if link == "arm folder":
        (out / "mlp").symlink_to(elsewhere, target_is_directory=True)
    else:
        (out / "mlp").mkdir()
        (out / "mlp" / "state_dict.pt").symlink_to(elsewhere / "thesis.tex")
    code, err = _export(uri, out, capsys, "--force")
    assert code == EXIT_BAD_INPUT and "symbolic link" in _one_line(err)
    assert [p.name for p in elsewhere.iterdir()] == ["thesis.tex"] and (elsewhere / "thesis.tex").read_text() == "keep"
    assert not (out / "linear").exists()


@pytest.mark.slow
def test_out_that_is_a_file_is_refused(planted, tmp_path, capsys):
    uri, _ = planted
    (tmp_path / "out").write_text("a file")
    code, err = _export(uri, tmp_path / "out", capsys)
    assert code == EXIT_BAD_INPUT and "a file, not a folder" in _one_line(err)
    assert (tmp_path / "out").read_text() == "a file"


UNTRACED = TINY_STUDY.replace('name = "tiny"', 'name = "untraced"').replace("seeds = [0, 1]", "seeds = [0]").split(
    "[[stage]]")[0] + """
[[stage]]
name = "branchy"
model = { kind = "custom", factory = "tests.untraced_models:branchy", width = 8 }
"""


@pytest.mark.slow
def test_a_custom_network_that_does_not_export_is_kept_as_weights_and_settings(write_study, store, monkeypatch,
                                                                               tmp_path, capsys):
    """No pickle, and no MLflow model (there would be nothing but a pickle to put in it): ablate.json, the state
    dict and the probe scores, from which export rebuilds it by calling the factory again; --register says why not."""
    assert main(["run", str(write_study(UNTRACED, "untraced.toml")), "--tracking-uri", store]) == 0
    no_unpickling = _forbid_unpickling(monkeypatch)
    folder = _model_folders(store, "untraced")["branchy"]
    assert {p.name for p in folder.iterdir()} == {"ablate.json", "state_dict.pt", "probe.pt"}
    code, err = _export(store, tmp_path / "out", capsys, study="untraced")
    assert code == 0, err
    exported = tmp_path / "out" / "branchy"
    assert "model.pt2" not in {p.name for p in exported.iterdir()}
    assert _same_weights(no_unpickling(exported / "state_dict.pt", weights_only=True),
                         no_unpickling(folder / "state_dict.pt", weights_only=True))
    capsys.readouterr()
    assert main(["export", "--study", "untraced", "--register", "--tracking-uri", store]) == EXIT_BAD_INPUT
    assert "no MLflow model to register" in _one_line(capsys.readouterr().err)
