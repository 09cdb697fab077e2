"""Does packing pay here? A few timed training steps of one trial alone against K packed (`pack = "auto"`).

Whether K trials trained as one grouped network beat K trials trained one after another
depends on the device, the threads and the layers: on this project's 2-core CPU, system C's
model 3 (8–24 channels) trains 1.4× faster per trial packed by 3, model 1 (16 channels over
26×26 maps) slower (results/benchmarks.md). So `auto` measures instead of guessing: the same
steps on synthetic batches of the dataset's shape (the arithmetic, not the pixels, decides),
after one untimed pass that builds oneDNN's kernels.
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from ablate import datasets
from ablate.datasets import DeviceData, Split
from ablate.engine._malloc import steady_allocations
from ablate.engine._pack import train_pack
from ablate.engine._train import train_trial
from ablate.spec import ConstantSchedule, TrialSettings

PROBE_STEPS = 12


def packed_speedup(settings: list[TrialSettings], device: torch.device, threads: int = 1) -> float:
    """Seconds per trial alone ÷ seconds per trial packed (above 1: packing pays), with `threads` torch threads (a
    CPU worker's), for PROBE_STEPS steps of each. The rates are made tiny and constant: a probe on random pixels
    must not diverge, and a rate's value costs nothing."""
    dataset = datasets.get(settings[0].dataset)
    batch = settings[0].train.batch_size
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (PROBE_STEPS * batch, *dataset.shape), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, dataset.classes, (len(images),), generator=generator)
    images, labels = images.to(device), labels.to(device)
    few = Split(images[:batch], labels[:batch])
    data = DeviceData(train=Split(images, labels), val=few, test=few, mean=127.5, std=64.0)
    quiet = [replace(s, train=replace(s.train, epochs=1, lr=1e-6, schedule=ConstantSchedule(), early_stopping=None))
             for s in settings]
    steady_allocations()  # as the workers run: else the few steps measure page faults
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        alone = _timed(lambda: train_trial(quiet[0], data, device, test=False))
        packed = _timed(lambda: train_pack(quiet, data, device, test=False))
    finally:
        torch.set_num_threads(previous)
    return alone * len(settings) / packed


def _timed(work) -> float:
    """Seconds of `work`'s second call (the first builds kernels and caches); neither call moves the process's
    random stream."""
    with torch.random.fork_rng(devices=[]):
        work()
        started = time.perf_counter()
        work()
        return time.perf_counter() - started
