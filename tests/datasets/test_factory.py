"""Your own data: `dataset = { factory = "module:function", ... }` — called and checked once, fingerprinted into every
trial's identity, rebuilt from its key in the worker processes, and every bad output one clear error naming
`study.dataset` before anything is recorded."""

from __future__ import annotations

import textwrap

import matplotlib.image
import pytest

from ablate import datasets
from ablate.cli import main
from ablate.design import expand
from ablate.errors import AblateError, SpecError
from ablate.spec import DataSettings, parse_study
from tests._helpers import spec_error_at

FACTORY = '''
import numpy as np

CALLS = []


def stripes(n=300, seed=0, grey=False, floats=False, names=True):
    """Three classes told apart by where a bright vertical band lies: any model learns it in an epoch."""
    CALLS.append(n)
    rng = np.random.default_rng(seed)

    def split(m):
        labels = rng.integers(0, 3, m)
        images = rng.integers(0, 100, (m, 3, 16, 12)).astype(np.uint8)
        for k in range(3):
            images[labels == k, :, :, 4 * k:4 * k + 3] += 120
        images = images[:, 0] if grey else images
        return (images / 255.0 if floats else images), labels

    (train, train_labels), (test, test_labels) = split(n), split(n // 3)
    out = {"train_images": train, "train_labels": train_labels, "test_images": test, "test_labels": test_labels}
    if names:
        out["class_names"] = ["left", "middle", "right"]
    return out


def broken(kind):
    good = stripes(60)
    if kind == "raises":
        raise FileNotFoundError("/data/letters.npz")
    if kind == "list":
        return [1, 2, 3]
    if kind == "missing":
        del good["test_labels"]
    if kind == "label range":
        good["train_labels"][0] = 5
    if kind == "negative":
        good["test_labels"][0] = -1
    if kind == "lengths":
        good["train_labels"] = good["train_labels"][:-1]
    if kind == "flat":
        good["train_images"] = good["train_images"].reshape(60, -1)
    if kind == "shapes":
        good["test_images"] = good["test_images"][:, :, :8]
    if kind == "nan":
        good["train_images"] = good["train_images"] / 255.0
        good["train_images"][0, 0, 0, 0] = float("nan")
    if kind == "float labels":
        good["train_labels"] = good["train_labels"].astype(float)
    return good


def restless():
    """Different data at every call: not reproducible."""
    return stripes(300 + len(CALLS))
'''

STUDY = """
[study]
name = "stripes"
dataset = {{ factory = "{module}:stripes"{kwargs} }}
seeds = [0, 1]

[data]
val_size = 50

[train]
epochs = 2
batch_size = 32

[[stage]]
name = "linear"
model = "linear"

[[stage]]
name = "mlp"
model = {{ kind = "mlp", hidden = [16] }}

[[stage]]
name = "cnn"
model = {{ kind = "cnn", blocks = [{{ out = 4, padding = 1, pool = true }}] }}
"""


@pytest.fixture
def module(tmp_path, monkeypatch):
    """A fresh factory module per test (its own name, so that no module is reused from an earlier test)."""
    name = f"factory_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    from ablate.datasets._registry import _DATASETS

    for key in [k for k in _DATASETS if datasets.is_factory_key(k)]:  # what this test's factory registered
        datasets.unregister(key)


def _study(module: str, kwargs: str = ""):
    return parse_study(STUDY.format(module=module, kwargs=kwargs), "stripes.toml")


def test_the_factory_is_checked_once_and_its_shape_reaches_every_model(module):
    study = _study(module, ", n = 300")
    data = datasets.get(study.info.dataset)
    assert data.shape == (3, 16, 12) and data.class_names == ("left", "middle", "right")
    assert (data.train_size, data.test_size) == (300, 100)
    trials = expand(study)
    assert trials[0].architecture == "linear 576 → 3"
    assert trials[0].params_count == 576 * 3 + 3


def test_the_data_fingerprint_and_arguments_are_part_of_every_trial_hash(module):
    hashes = {kwargs: [t.hash for t in expand(_study(module, kwargs))]
              for kwargs in ("", ", n = 300", ", n = 301", ", seed = 1")}
    assert hashes[""] != hashes[", n = 300"]  # the same data, but other arguments written: another identity
    assert len({tuple(h) for h in hashes.values()}) == 4
    assert [t.hash for t in expand(_study(module, ", n = 301"))] == hashes[", n = 301"]  # and stable
    key = _study(module).info.dataset
    assert key.startswith(f"factory:{module}:stripes#") and len(key.rsplit("#", 1)[1]) == 12


def test_a_factory_plan_shows_the_examples_used_and_no_files_to_look_for(module, tmp_path):
    from ablate import console

    study = _study(module, ", n = 300")
    info = console.dataset_info(study, expand(study), tmp_path / "nothing")
    assert info["used"] == [{"train": 250, "validation": 50, "test": 100, "arms": ["linear", "mlp", "cnn"]}]
    assert info["files"]["state"] == "factory" and info["files"]["missing"] == []
    assert "files: none: the factory function makes the data" in console.dataset_line(info)
    datasets.ensure_files(study.info.dataset, tmp_path / "nothing")  # nothing to find, nothing to download
    assert not (tmp_path / "nothing").exists()


def test_a_worker_process_rebuilds_the_dataset_from_its_key_and_refuses_other_data(module):
    key = _study(module, ", n = 90").info.dataset
    datasets.unregister(key)  # as in a fresh worker process
    assert datasets.get(key).train_size == 90
    restless = parse_study(STUDY.format(module=module, kwargs="").replace(":stripes", ":restless"), "r.toml")
    datasets.unregister(restless.info.dataset)
    with pytest.raises(AblateError, match="returned other data than when the study was planned"):
        datasets.get(restless.info.dataset)


def test_grey_float_images_become_one_channel_float32_normalised_by_their_own_statistics(module):
    import torch

    study = _study(module, ", grey = true, floats = true, names = false")
    data = datasets.get(study.info.dataset)
    assert data.shape == (1, 16, 12) and data.class_names == ("0", "1", "2") and data.pixel_bytes == 4
    resident = datasets.load(study.info.dataset, DataSettings(val_size=50), "unused", torch.device("cpu"))
    assert resident.train.images.dtype == torch.float32
    normalised = resident.normalise(resident.train.images)
    assert abs(float(normalised.mean())) < 0.05 and abs(float(normalised.std()) - 1) < 0.05


@pytest.mark.parametrize("kind, says", [
    ("raises", "raised FileNotFoundError: /data/letters.npz"),
    ("list", "returned list; it must return a mapping"),
    ("missing", "a mapping without test_labels"),
    ("label range", "labels up to 5 but 3 class names"),
    ("negative", "test labels below 0"),
    ("lengths", "60 train images but 59 train labels"),
    ("flat", "train images of shape (60, 576)"),
    ("shapes", "train images of shape (3, 16, 12) and test images of shape (3, 8, 12)"),
    ("nan", "train images with NaN"),
    ("float labels", "train labels of shape (60,) and dtype float64"),
])
def test_a_bad_factory_is_one_error_at_study_dataset(module, kind, says):
    text = STUDY.format(module=module, kwargs=f', kind = "{kind}"').replace(":stripes", ":broken")
    spec_error_at(text, "study.dataset", says)


def test_a_factory_that_cannot_be_imported_says_where_it_was_looked_for():
    with pytest.raises(SpecError, match="cannot be imported .*the study file's folder"):
        parse_study(STUDY.format(module="no_such_module", kwargs=""), "bad.toml")


def test_a_misspelt_dataset_name_is_told_the_closest():
    with pytest.raises(SpecError, match="did you mean 'mnist'"):
        parse_study(STUDY.format(module="m", kwargs="").replace('{ factory = "m:stripes" }', '"mnsit"'), "bad.toml")


def test_a_bad_factory_stops_the_run_before_anything_is_recorded(module, tmp_path, capsys):
    study = tmp_path / "bad.toml"
    study.write_text(STUDY.format(module=module, kwargs=', kind = "lengths"').replace(":stripes", ":broken"))
    store = tmp_path / "mlflow.db"
    assert main(["run", str(study), "--tracking-uri", f"sqlite:///{store}"]) == 2
    err = capsys.readouterr().err
    assert "study.dataset" in err and "Traceback" not in err
    assert not store.exists()


@pytest.mark.slow
def test_a_factory_study_trains_in_worker_processes_packed_and_reports(module, tmp_path):
    """The real path: the CLI, worker processes that know the dataset only by its key, a pack, a report."""
    study = tmp_path / "stripes.toml"
    study.write_text(STUDY.format(module=module, kwargs=", n = 400") + textwrap.dedent("""
        [execution]
        pack = 2
        max_workers = 1
    """))
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["run", str(study), "--tracking-uri", store]) == 0
    out = tmp_path / "report" / "stripes.md"
    assert main(["report", "--tracking-uri", store, "--study", "stripes", "--out", str(out)]) == 0
    table = out.read_text()
    assert "| linear" in table and "| cnn" in table
    for figure in ("confusion", "templates"):
        assert matplotlib.image.imread(out.parent / f"stripes-{figure}.png").std() > 0.05, figure
    linear = next(line for line in table.splitlines() if line.startswith("| linear"))
    assert float(linear.split("|")[4].strip(" *").split("±")[0]) > 90  # it learned the bands (chance is 33%)
