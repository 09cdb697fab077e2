"""Per-channel mean and std of a dataset's training images: computed, not hard-coded, and cached.

Computed over the whole training file (the validation examples split from it included, as the
published constants are), exactly: for uint8 images from integer histograms, so the numbers
never depend on summation order, and rounded to 4 decimals as the constants are published
(MNIST 0.1307 / 0.3081, CIFAR-10 0.4914 … / 0.2470 …) — which keeps MNIST's results
bit-identical to the days when they were written into the code. The result is cached per
process and, for datasets read from files, in `ablate-stats.json` beside them (keyed by the
files' sizes and modification times), so a worker does not recompute what another did.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

DECIMALS = 4
CACHE_FILE = "ablate-stats.json"

Stats = tuple[tuple[float, ...], tuple[float, ...]]  # (mean per channel, std per channel), images scaled to [0, 1]
_MEMORY: dict[str, Stats] = {}


def channel_stats(images: np.ndarray) -> Stats:
    """Mean and (population) std per channel of (N, C, H, W) images: uint8 scaled to [0, 1]; float as they are."""
    if images.dtype != np.uint8:
        values = images.astype(np.float64)
        return tuple(values.mean(axis=(0, 2, 3)).tolist()), tuple(values.std(axis=(0, 2, 3)).tolist())
    means, stds = [], []
    levels = np.arange(256, dtype=np.float64)
    for channel in range(images.shape[1]):
        counts = np.bincount(images[:, channel].reshape(-1), minlength=256).astype(np.float64)  # exact integers
        total = counts.sum()
        mean = (counts @ levels) / total
        variance = (counts @ (levels - mean) ** 2) / total
        means.append(round(float(mean) / 255.0, DECIMALS))
        stds.append(round(float(np.sqrt(variance)) / 255.0, DECIMALS))
    return tuple(means), tuple(stds)


def cached_stats(key: str, images: np.ndarray, files: list[Path]) -> Stats:
    """The training images' stats, from this process's memory, the cache file beside `files`, or computed."""
    if key in _MEMORY:
        return _MEMORY[key]
    stamp = {str(f.name): [f.stat().st_size, f.stat().st_mtime_ns] for f in files}
    cache = files[0].parent / CACHE_FILE if files else None
    stored = _read_cache(cache).get(key, {}) if cache else {}
    stats = (tuple(stored["mean"]), tuple(stored["std"])) if stored.get("files") == stamp else None
    if stats is None:
        stats = channel_stats(images)
        if cache:
            _write_cache(cache, key, {"files": stamp, "mean": list(stats[0]), "std": list(stats[1])})
    _MEMORY[key] = stats
    return stats


def _read_cache(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # none yet, or damaged: compute again
        return {}


def _write_cache(path: Path, key: str, entry: dict) -> None:
    """Atomically, so that workers writing at once leave one whole file; a read-only data folder is no error."""
    cache = _read_cache(path)
    cache[key] = entry
    try:
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".ablate-stats-")
    except OSError:
        return
    try:
        with os.fdopen(descriptor, "w") as out:
            json.dump(cache, out, indent=1)
        os.replace(temporary, path)
    except OSError:  # a full disk: the numbers are computed again next time
        Path(temporary).unlink(missing_ok=True)
