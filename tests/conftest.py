"""Shared fixtures: the committed MNIST files, throwaway MLflow stores, tiny studies."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO / "data"

TINY_STUDY = """
[study]
name = "tiny"
seeds = [0, 1]

[data]
val_size = 500
train_limit = 1000
test_limit = 500

[train]
epochs = 2
batch_size = 128

[[stage]]
name = "linear"
model = { kind = "linear" }

[[stage]]
name = "mlp"
model = { kind = "mlp", hidden = [32] }
"""


@pytest.fixture(scope="session", autouse=True)
def _own_cache_folder(tmp_path_factory):
    """The session's own cache folder (ablate keeps its empty-store template there: ablate.tracking's _template),
    for the processes the tests start too; never the developer's."""
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield Path(os.environ["XDG_CACHE_HOME"])
    if before is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = before


@pytest.fixture(autouse=True)
def _data_dir(monkeypatch):
    """Every test reads the MNIST files committed in data/, never the network."""
    monkeypatch.setenv("ABLATE_DATA_DIR", str(DATA_DIR))


@pytest.fixture(autouse=True)
def _no_tracking_uri_in_the_environment():
    """ablate takes the store from $MLFLOW_TRACKING_URI when no --tracking-uri is given, and MLflow's own
    set_tracking_uri writes that variable: a test that calls it (or a developer's shell that sets it) must not choose
    the store of the tests after it. Cleared before each test, and after it whatever the test set."""
    before = os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    if before is not None:
        os.environ["MLFLOW_TRACKING_URI"] = before


@pytest.fixture
def swap_dataset():
    """swap_dataset(dataset): `dataset` registered under its name (ablate.datasets.register) for this test; the one
    it replaced is registered again after it, as a plugin or a test that registers a dataset for a while does."""
    from ablate import datasets

    replaced = []

    def swap(dataset):
        replaced.append(datasets.get(dataset.name))
        datasets.register(dataset)

    yield swap
    for dataset in reversed(replaced):
        datasets.register(dataset)


@pytest.fixture
def write_study(tmp_path):
    def write(text: str, name: str = "study.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def store(new_store) -> str:
    """A fresh SQLite MLflow store in a temporary folder (mlflow.db: a copy of the session's new store, made in
    milliseconds where MLflow's migrations take seconds; a test of a store's creation makes its own path)."""
    return new_store()


@pytest.fixture(scope="session")
def _empty_store(tmp_path_factory, _own_cache_folder) -> Path:
    """A new store, made once a session: MLflow's migrations build its tables in seconds (~4 s here)."""
    from ablate.tracking import Tracker

    path = tmp_path_factory.mktemp("empty-store") / "mlflow.db"
    Tracker(f"sqlite:///{path}")
    return path


@pytest.fixture
def new_store(tmp_path, _empty_store):
    """new_store(name) → the URI of a fresh SQLite store in the test's folder: a copy of the session's new store, the
    very tables a first use builds, in milliseconds."""
    import sqlite3

    def make(name: str = "mlflow") -> str:
        path = tmp_path / f"{name}.db"
        source, target = sqlite3.connect(_empty_store), sqlite3.connect(path)
        try:
            source.backup(target)
        finally:
            source.close()
            target.close()
        return f"sqlite:///{path}"

    return make


def hooked_macs(model, shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass of one image of `shape`, counted by hooks on the network's conv and
    linear layers: the yardstick for ablate.models.macs, which counts them from the spec alone."""
    import torch

    counted: list[int] = []

    def count(module, _, out) -> None:
        if isinstance(module, torch.nn.Conv2d):
            counted.append(out[0].numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1])
        elif isinstance(module, torch.nn.Linear):
            counted.append(module.in_features * module.out_features)

    handles = [module.register_forward_hook(count) for module in model.modules()]
    model.eval()(torch.zeros(1, *shape))
    for handle in handles:
        handle.remove()
    return sum(counted)


@pytest.fixture
def tracked(tmp_path, store):
    """A tracker with the tiny study's experiment, a study file to log, and its trials."""
    from ablate.design import expand
    from ablate.spec import parse_study
    from ablate.tracking import Tracker

    study = tmp_path / "tiny.toml"
    study.write_text(TINY_STUDY)
    tracker = Tracker(store)
    return tracker, tracker.experiment("tiny"), study, expand(parse_study(TINY_STUDY))


# Comparing trained results so that a verdict holds on any x86-64 host (issue 27). Two computations of one training
# (packed or single, channels-last or contiguous) round differently, and on another CPU (AVX2 or AVX-512, other oneDNN
# and MKL kernels) in yet other ways; at a real learning rate training amplifies that noise, by an amount that depends
# on the kernels. So a test compares either what rounding cannot move (float64 arithmetic, or a negligible rate), or
# the trained results statistically, against the spread between seeds, which no kernel changes.
FALSE_ALARM = 1e-3  # the rate at which seed_noise_p flags two computations of the same training as different


def seed_noise_p(first, second) -> float:
    """Two-sided p-value of Student's two-sample t-test: is the gap between the means of `first` and `second` (one
    trained result per seed each) larger than the spread between seeds explains? Under the same training computed two
    ways from the same seeds the pairs are positively correlated, which only shrinks the gap: the chance of a
    p-value below FALSE_ALARM stays at most FALSE_ALARM, whatever the correlation (simulated in
    tests/engine/test_pack.py::test_the_seed_noise_comparison_keeps_its_false_alarm_rate)."""
    from scipy import stats

    return float(stats.ttest_ind(first, second).pvalue)


@pytest.fixture
def float64(monkeypatch):
    """The engine trains in float64 (networks built in it, the packed optimizer's per-step rates in it, images
    normalised to it) on the data this returns. In float64 the rounding of any summation order is ~1e-16, and
    Adam's eps (1e-8) dwarfs the gradient noise of weights the loss does not depend on, where float32 noise (~1e-9)
    is turned into full steps: two computations of one training agree to the float32 accumulators that log the
    metrics (~1e-7), at a real learning rate and on any host."""
    from dataclasses import replace

    import torch

    from ablate import models
    from ablate.engine import _pack

    build = models.build_model
    monkeypatch.setattr(models, "build_model", lambda *args, **kwargs: build(*args, **kwargs).double())
    monkeypatch.setattr(_pack, "_by_step", lambda rows, device: torch.tensor(rows, dtype=torch.float64,
                                                                             device=device).T.contiguous())

    def in_float64(data):
        def wide(value):  # (C, 1, 1): a 0-dim tensor would not promote the float32 images
            return torch.as_tensor(value, dtype=torch.float64, device=data.train.labels.device).reshape(-1, 1, 1)

        return replace(data, mean=wide(data.mean), std=wide(data.std))

    return in_float64
