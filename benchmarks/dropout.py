"""Dropout before and after the counter-based stream, for benchmarks/bench.py: the engine with torch's own CPU dropout
put back (`torchs_dropout`), and the dropout layers of system C's model 2 timed alone (`dropout_ms`).

    python benchmarks/dropout.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ablate.models import _dropout  # noqa: E402

# The inputs of system C's model 2's dropout layers at batch 64 (studies/cnn8k.toml): its conv blocks' outputs.
MODEL2_SHAPES = ((64, 16, 26, 26), (64, 8, 24, 24), (64, 16, 22, 22), (64, 8, 9, 9), (64, 16, 7, 7), (64, 12, 3, 3))


def bernoulli_noise(shape, p, key, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """The dropout factors as torch's CPU dropout made them before: bernoulli_ (one serial Mersenne Twister, from the
    global generator), then the division by the keep rate; in the logical (contiguous) layout, as before."""
    return torch.empty(shape, dtype=dtype, device=device).bernoulli_(1 - p).div_(1 - p)


@contextmanager
def torchs_dropout():
    """The engine's dropout (single runs and packs) drawing torch's bernoulli_ masks again: the cost before."""
    counter = _dropout.dropout_noise
    _dropout.dropout_noise = bernoulli_noise
    try:
        yield
    finally:
        _dropout.dropout_noise = counter


def dropout_ms(repeats: int, p: float = 0.1) -> dict[str, float]:
    """Milliseconds per training step that model 2's six dropout layers take, one torch thread: the masks, the
    forward multiply and the backward's, with torch's bernoulli_ (`before`) and the counter-based stream (`now`),
    in turns (before, now, before, now, …) so that a busy machine slows both alike; medians."""
    from ablate.engine import steady_allocations

    steady_allocations()
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    inputs = [torch.randn(s).contiguous(memory_format=torch.channels_last).requires_grad_(True) for s in MODEL2_SHAPES]
    grads = [torch.randn(s).contiguous(memory_format=torch.channels_last) for s in MODEL2_SHAPES]

    def steps(noise, count: int = 20) -> float:
        started = time.perf_counter()
        for step in range(count):
            for site, (x, grad) in enumerate(zip(inputs, grads)):
                y = x * noise(x.shape, p, _dropout.stream_key(0, site, step), x.device, x.dtype)
                y.backward(grad)
        return 1000 * (time.perf_counter() - started) / count

    found: dict[str, list[float]] = {"before": [], "now": []}
    try:
        for noise in (bernoulli_noise, _dropout.dropout_noise):
            steps(noise, 3)  # warm: allocations, the counter's cached sizes
        for _ in range(repeats):
            found["before"].append(steps(bernoulli_noise))
            found["now"].append(steps(_dropout.dropout_noise))
    finally:
        torch.set_num_threads(previous)
    return {name: statistics.median(times) for name, times in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    found = dropout_ms(args.repeats)
    print(f"model 2's dropout layers, ms per training step (one thread): torch's bernoulli_ {found['before']:.2f}, "
          f"counter-based {found['now']:.2f} (×{found['before'] / found['now']:.2f}); load average "
          f"{os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
