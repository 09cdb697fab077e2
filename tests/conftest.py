"""Shared fixtures: the committed MNIST files, throwaway MLflow stores, tiny studies."""

from __future__ import annotations

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


@pytest.fixture(autouse=True)
def _data_dir(monkeypatch):
    """Every test reads the MNIST files committed in data/, never the network."""
    monkeypatch.setenv("ABLATE_DATA_DIR", str(DATA_DIR))


@pytest.fixture
def write_study(tmp_path):
    def write(text: str, name: str = "study.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def store(tmp_path) -> str:
    """A fresh SQLite MLflow store in a temporary folder."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


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
