"""Normalisation constants computed from the training images, exactly, and cached beside the files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ablate import datasets
from ablate.datasets import _stats

REPO = Path(__file__).resolve().parents[2]


def test_uint8_statistics_are_exact_and_rounded_as_published():
    images = np.random.default_rng(0).integers(0, 256, (50, 3, 7, 5), dtype=np.uint8)
    mean, std = _stats.channel_stats(images)
    scaled = images / 255.0
    assert mean == tuple(round(float(v), 4) for v in scaled.mean(axis=(0, 2, 3)))
    assert std == pytest.approx(scaled.std(axis=(0, 2, 3)), abs=6e-5)


def test_mnist_gets_the_constants_it_always_had(tmp_path, monkeypatch):
    """The computed constants are the published ones, so MNIST's results stay bit-identical."""
    monkeypatch.setattr(_stats, "_MEMORY", {})
    arrays = datasets.read_arrays("mnist", REPO / "data")
    assert _stats.channel_stats(arrays["train_images"]) == ((0.1307,), (0.3081,))


def test_the_cache_file_is_reused_until_the_files_change(tmp_path, monkeypatch):
    files = [tmp_path / "a.bin", tmp_path / "b.bin"]
    for f in files:
        f.write_bytes(b"x")
    images = np.full((4, 1, 2, 2), 51, dtype=np.uint8)
    monkeypatch.setattr(_stats, "_MEMORY", {})
    assert _stats.cached_stats("d", images, files) == ((0.2,), (0.0,))
    assert json.loads((tmp_path / _stats.CACHE_FILE).read_text())["d"]["mean"] == [0.2]

    monkeypatch.setattr(_stats, "_MEMORY", {})  # another process: reads the file, computes nothing
    monkeypatch.setattr(_stats, "channel_stats", lambda images: pytest.fail("recomputed"))
    assert _stats.cached_stats("d", images, files) == ((0.2,), (0.0,))

    monkeypatch.undo()
    monkeypatch.setattr(_stats, "_MEMORY", {})
    files[0].write_bytes(b"changed")  # a new download: computed again
    assert _stats.cached_stats("d", np.zeros((4, 1, 2, 2), dtype=np.uint8), files) == ((0.0,), (0.0,))


def test_a_read_only_data_folder_is_no_error(tmp_path, monkeypatch):
    monkeypatch.setattr(_stats, "_MEMORY", {})
    monkeypatch.setattr(_stats.tempfile, "mkstemp", lambda *a, **k: (_ for _ in ()).throw(PermissionError()))
    (tmp_path / "f").write_bytes(b"x")
    assert _stats.cached_stats("d", np.zeros((2, 1, 1, 1), dtype=np.uint8), [tmp_path / "f"]) == ((0.0,), (0.0,))
    assert not (tmp_path / _stats.CACHE_FILE).exists()
