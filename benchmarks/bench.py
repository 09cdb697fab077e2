"""ablate's engine and study throughput against the reference projects' way of training.

The reference style is what the four reference projects do: a torchvision-style MNIST dataset
that turns each image into a PIL image and runs per-sample transforms (ToTensor, Normalize,
RandomRotation for system C's model 3), a DataLoader with shuffling, and a loop that moves each
batch to the device and reads the loss back every step; trials run one after another.

    python benchmarks/bench.py [--repeats 3] [--out results/benchmarks.md]

Everything is measured in this one invocation on this machine; the table reports medians over
repeats and the ratio reference / ablate (higher is better for ablate).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dropout import dropout_ms, torchs_dropout  # noqa: E402 — benchmarks/dropout.py, beside this script
from startup import measure as measure_startup  # noqa: E402 — benchmarks/startup.py
from startup import table as startup_table  # noqa: E402

from ablate import datasets, models  # noqa: E402
from ablate.design import expand  # noqa: E402
from ablate.engine import make_optimizer, train_pack, train_trial  # noqa: E402
from ablate.run import cpu_model  # noqa: E402
from ablate.spec import DataSettings, load_study  # noqa: E402

MNIST = datasets.get("mnist")


class ReferenceMNIST(Dataset):
    """torchvision.datasets.MNIST's __getitem__: a PIL image per sample, then the transform."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        grey = images.reshape(len(images), *images.shape[-2:])  # one channel, as torchvision keeps MNIST
        self.images, self.labels, self.transform = (torch.from_numpy(grey), torch.from_numpy(labels.astype(np.int64)),
                                                    transform)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = Image.fromarray(self.images[index].numpy(), mode="L")
        return self.transform(image), int(self.labels[index])


def reference_epoch(settings, arrays: dict, device: torch.device, epochs: int = 1) -> float:
    """Training epochs the reference way (one model, `epochs` passes); seconds."""
    steps = [transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))]
    if settings.train.augment.rotation:
        steps.insert(0, transforms.RandomRotation(settings.train.augment.rotation))
    split = DataSettings(val_size=settings.data.val_size)
    order = torch.randperm(60_000, generator=torch.Generator().manual_seed(split.split_seed))
    train = order[split.val_size :].numpy()
    loader = DataLoader(ReferenceMNIST(arrays["train_images"][train], arrays["train_labels"][train],
                                       transforms.Compose(steps)),
                        batch_size=settings.train.batch_size, shuffle=True, num_workers=0)
    torch.manual_seed(settings.seed)
    model = models.build_model(settings.model, MNIST)
    models.initialise(model, settings.train.init)
    model.to(device).train()
    optimizer = make_optimizer(model, settings.train)
    loss_fn = nn.CrossEntropyLoss()
    started = time.perf_counter()
    for _ in range(epochs):
        running = 0.0
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad()
            loss = loss_fn(model(images), labels)
            loss.backward()
            optimizer.step()
            running += loss.item()  # the per-step host sync every reference loop has
    return time.perf_counter() - started


def engine_epoch(settings, device: torch.device) -> float:
    """One epoch in ablate's engine (training plus its validation pass); seconds."""
    data = datasets.load(settings.dataset, settings.data, REPO / "data", device)
    result = train_trial(replace(settings, train=replace(settings.train, epochs=1)), data, device, test=False)
    return result.history[0]["epoch_seconds"]


def pack_epoch_rows(repeats: int, device: torch.device, k: int) -> list[tuple[str, float, float]]:
    """K trials (seeds 0..K-1) of one architecture for one epoch: one after another in ablate's engine, then as
    one packed network; seconds for all K (training plus validation)."""

    linearity = {t.stage: t.settings for t in expand(load_study(REPO / "studies" / "linearity.toml"))}
    rows = []
    for name, settings in (("linear (batch 256)", linearity["linear-ce"]), ("MLP-256 (batch 256)", linearity["mlp"])):
        one_epoch = replace(settings, train=replace(settings.train, epochs=1))
        group = [replace(one_epoch, seed=seed) for seed in range(k)]
        data = datasets.load(settings.dataset, settings.data, REPO / "data", device)

        def singles(group=group, data=data) -> float:
            started = time.perf_counter()
            for trial in group:
                train_trial(trial, data, device, test=False)
            return time.perf_counter() - started

        def packed(group=group, data=data) -> float:
            started = time.perf_counter()
            train_pack(group, data, device, test=False)
            return time.perf_counter() - started

        warm = device.type == "cuda"
        rows.append((name, median_of(repeats, singles, warm), median_of(repeats, packed, warm)))
        print(f"packing {k} × {name}: one by one {rows[-1][1]:.2f} s, packed {rows[-1][2]:.2f} s", flush=True)
    return rows


def median_of(repeats: int, measure, warm: bool = False) -> float:
    """The median of `repeats` measurements; with `warm` (on a GPU) after one untimed call, which pays CUDA's lazy
    start (context, cuBLAS handles, kernel loading) that a median of few repeats would otherwise take in."""
    if warm:
        measure()
    return statistics.median(measure() for _ in range(repeats))


def epoch_rows(repeats: int, device: torch.device) -> list[tuple[str, float, float]]:
    arrays = datasets.read_arrays("mnist", REPO / "data")
    linearity = {t.stage: t.settings for t in expand(load_study(REPO / "studies" / "linearity.toml"))}
    cnn = {t.stage: t.settings for t in expand(load_study(REPO / "studies" / "cnn8k.toml"))}
    rows = []
    for name, settings in (("linear (batch 256)", linearity["linear-ce"]), ("MLP-256 (batch 256)", linearity["mlp"]),
                           ("system C model 3 (batch 64, rotation ±7°)", cnn["model3"])):
        warm = device.type == "cuda"
        reference = median_of(repeats, lambda settings=settings: reference_epoch(settings, arrays, device), warm)
        engine = median_of(repeats, lambda settings=settings: engine_epoch(settings, device), warm)
        data = datasets.load(settings.dataset, settings.data, REPO / "data", device)
        rows.append((name, reference, engine, epoch_flop(settings, data)))
        print(f"{name}: reference {reference:.2f} s, ablate {engine:.2f} s, ×{reference / engine:.1f}", flush=True)
    return rows


def layout_epoch(settings, device: torch.device, layout: torch.memory_format | None, pack: int = 1,
                 torch_dropout: bool = False) -> float:
    """Seconds per trial of one engine epoch (training and validation) with the CPU's one thread per worker, in
    `layout` (None: the engine's own choice, channels-last for CNNs; contiguous_format: as before), alone or packed
    by `pack` (seeds 0..pack-1); with `torch_dropout`, dropout draws torch's bernoulli_ masks, as before the
    counter-based stream."""
    from contextlib import nullcontext

    from ablate.engine import _pack, _train

    chosen = _train.conv_layout
    if layout is not None:
        _train.conv_layout = _pack.conv_layout = lambda kind, device: layout
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = replace(settings, train=replace(settings.train, epochs=1))
        data = datasets.load(settings.dataset, settings.data, REPO / "data", device)
        with torchs_dropout() if torch_dropout else nullcontext():
            if pack == 1:
                return train_trial(one, data, device, test=False).history[0]["epoch_seconds"]
            packed = train_pack([replace(one, seed=seed) for seed in range(pack)], data, device, test=False)
        return packed[0].history[0]["epoch_seconds"] / pack
    finally:
        _train.conv_layout = _pack.conv_layout = chosen
        torch.set_num_threads(previous)


def conv_rows(repeats: int, device: torch.device) -> list[tuple]:
    """System C's three CNNs: seconds per trial-epoch before (channels-last, torch's bernoulli_ dropout), now (the
    counter-based dropout stream) and now packed by 3 (`pack = "auto"` packs where the probe finds this faster),
    with their GFLOP. The three are measured in turns, repeat after repeat, so that a busy machine slows them alike."""
    cnn = {t.stage: t.settings for t in expand(load_study(REPO / "studies" / "cnn8k.toml"))}
    rows = []
    for name, settings in cnn.items():
        data = datasets.load(settings.dataset, settings.data, REPO / "data", device)
        before, after, packed = interleaved(repeats, [
            lambda settings=settings: layout_epoch(settings, device, None, torch_dropout=True),
            lambda settings=settings: layout_epoch(settings, device, None),
            lambda settings=settings: layout_epoch(settings, device, None, pack=3)])
        rows.append((name, before, after, packed, epoch_flop(settings, data)))
        print(f"{name}: before {before:.2f} s, now {after:.2f} s, packed ×3 {packed:.2f} s per trial (load "
              f"{os.getloadavg()[0]:.2f})", flush=True)
    return rows


def interleaved(repeats: int, measures: list) -> list[float]:
    """The median of each measurement over `repeats` rounds, each round taking every measurement once, in turn, and
    each round starting one further along (A B C, B C A, C A B, …): what runs first (kernels built for new shapes)
    or just after another (its memory given back) falls on each measurement alike."""
    times: list[list[float]] = [[] for _ in measures]
    for repeat in range(repeats):
        for offset in range(len(measures)):
            index = (repeat + offset) % len(measures)
            times[index].append(measures[index]())
    return [statistics.median(found) for found in times]


def conv_options(device: torch.device) -> dict[str, float]:
    """The options that did not make it into the engine, and what the engine's choices rest on, for system C's
    model 3: torch.compile of a training step (inductor, channels-last; its compile time), 2 workers × 1 thread
    against 1 worker × 2 threads, and the rotation's share of an epoch."""
    import multiprocessing

    cnn = {t.stage: t.settings for t in expand(load_study(REPO / "studies" / "cnn8k.toml"))}
    settings = cnn["model3"]
    found = dict(_compiled_step(settings))
    unrotated = replace(settings, train=replace(settings.train, augment=replace(settings.train.augment, rotation=0.0)))
    found["rotated"] = layout_epoch(settings, device, None)
    found["unrotated"] = layout_epoch(unrotated, device, None)
    with multiprocessing.get_context("spawn").Pool(2) as pool:  # two workers at once, one thread each
        started = time.perf_counter()
        pool.map(_one_thread_epoch, [settings, settings])
        found["two_workers"] = time.perf_counter() - started
    torch.set_num_threads(2)
    started = time.perf_counter()
    for _ in range(2):  # one worker with both threads, the same two epochs
        engine_epoch(settings, device)
    found["two_threads"] = time.perf_counter() - started
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"model 3 options: {found}", flush=True)
    return found


def _one_thread_epoch(settings) -> float:
    return layout_epoch(settings, torch.device("cpu"), None)


def _compiled_step(settings, steps: int = 200):
    """Milliseconds per training step of batch 64, eager and torch.compile'd (both channels-last, one thread), and
    the seconds compiling took."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = models.build_model(settings.model, MNIST).to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, settings.train)
    images = torch.randn(64, *MNIST.shape).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (64,))

    def step() -> None:
        loss = nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def per_step(work) -> float:
        for _ in range(10):
            work()
        return 1000 * _seconds(lambda: [work() for _ in range(steps)]) / steps

    eager = per_step(step)
    compiled = torch.compile(step)
    compile_seconds = _seconds(compiled)
    yield "eager_ms", eager
    yield "compiled_ms", per_step(compiled)
    yield "compile_s", compile_seconds
    torch.set_num_threads(os.cpu_count() or 1)


def conv_section(rows, options: dict[str, float], roof: dict[str, float], dropout: dict[str, float]) -> list[str]:
    def rate(flop: float, seconds: float) -> str:
        return f"{flop / seconds / 1e9:.1f} ({100 * flop / seconds / 1e9 / roof['conv']:.0f}%)"

    return [
        "## System C's CNNs on one CPU thread (a worker's), seconds per trial-epoch", "",
        "| model | GFLOP/epoch | before: torch's dropout (s) | now: counter-based dropout (s) | packed ×3, now (s) | "
        "GFLOP/s (of the 1-thread conv roofline): before / now / packed |", "|---|---|---|---|---|---|",
        *[f"| {name} | {flop / 1e9:.0f} | {before:.2f} | {after:.2f} (×{before / after:.2f}) | {packed:.2f} "
          f"(×{before / packed:.2f}) | {rate(flop, before)} / {rate(flop, after)} / {rate(flop, packed)} |"
          for name, before, after, packed, flop in rows], "",
        "Training and validation of one epoch on full MNIST (55,000 + 5,000 images), batch 64, one torch thread "
        "(as each CPU worker runs), channels-last (oneDNN's NHWC convolutions and max pooling); packed: three seeds "
        "as one grouped network, seconds per trial (`pack = \"auto\"` packs an architecture where a probe of a few "
        "steps finds it ≥ 1.15× faster per trial). Before: dropout masks from torch's CPU `bernoulli_` (one serial "
        "Mersenne Twister); now: from the counter-based stream (SplitMix64 keyed by seed, layer and step, "
        "vectorised). Models 1 and 3 have no dropout: their two columns differ by the machine's noise. The three "
        "columns are measured in turns, repeat after repeat.", "",
        f"Model 2's six dropout layers alone (masks, forward and backward multiplies, one thread): "
        f"{dropout['before']:.2f} ms per step with `bernoulli_`, {dropout['now']:.2f} ms counter-based "
        f"(×{dropout['before'] / dropout['now']:.2f}).", "",
        "Measured for system C's model 3, and not taken:", "",
        "| option | measured |", "|---|---|",
        f"| torch.compile of the training step (inductor, channels-last) | {options['compiled_ms']:.2f} ms/step "
        "against "
        f"{options['eager_ms']:.2f} eager (×{options['eager_ms'] / options['compiled_ms']:.2f}), after "
        f"{options['compile_s']:.0f} s compiling per architecture and worker |",
        f"| 1 worker × 2 threads instead of 2 workers × 1 thread | two epochs in {options['two_threads']:.1f} s "
        "against "
        f"{options['two_workers']:.1f} s (×{options['two_threads'] / options['two_workers']:.2f} the time) |",
        f"| rotation ±7° (on the device, per batch) | {options['rotated']:.2f} s/epoch against "
        f"{options['unrotated']:.2f} without ({100 * (1 - options['unrotated'] / options['rotated']):.0f}% of the "
        "epoch) |", "",
    ]


def study_rows(epochs: int, device: torch.device, pack: int) -> tuple[float, float, float, int]:
    """A corner of studies/ablations.toml (init × dropout × batchnorm at a constant rate; one seed) at `epochs`
    epochs: a sequential reference-style loop against `ablate run` (workers, MLflow logging, the table); wall s."""
    arrays = datasets.read_arrays("mnist", REPO / "data")
    text = (REPO / "studies" / "ablations.toml").read_text().replace("epochs = 5", f"epochs = {epochs}")
    lines = []
    for line in text.replace("seeds = [0, 1, 2]", "seeds = [0]").splitlines():
        if line.startswith('"train.schedule"'):
            line = '"train.schedule" = ["constant"]'
        lines.append(line)
    with tempfile.TemporaryDirectory() as folder:
        study = Path(folder) / "ablations.toml"
        study.write_text("\n".join(lines) + "\n")
        subset = [t.settings for t in expand(load_study(study))]
        started = time.perf_counter()
        for settings in subset:
            reference_epoch(settings, arrays, device, epochs)
        reference = time.perf_counter() - started
        walls = []
        for options, store in (([], "unpacked.db"), (["--pack", str(pack)], "packed.db")):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "ablate", "run", str(study), "--tracking-uri",
                            f"sqlite:///{Path(folder) / store}", *options], cwd=REPO, check=True, capture_output=True,
                           env={**os.environ, "ABLATE_DATA_DIR": str(REPO / "data")})
            walls.append(time.perf_counter() - started)
    return reference, walls[0], walls[1], len(subset)


def startup_seconds(arguments: list[str], repeats: int) -> float:
    def once() -> float:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ablate", *arguments], cwd=REPO, check=True, capture_output=True)
        return time.perf_counter() - started

    return median_of(repeats, once)


def bookkeeping_ms(repeats: int) -> float:
    """MLflow work per trial on the default SQLite store: run, params, 5 epochs of metrics, final metrics, end."""
    from ablate.tracking import Tracker

    trial = expand(load_study(REPO / "studies" / "linearity.toml"))[0]
    metrics = {"train_loss": 0.1, "train_accuracy": 0.9, "val_loss": 0.1, "val_accuracy": 0.9, "lr": 0.001,
               "epoch_seconds": 1.0}
    with tempfile.TemporaryDirectory() as folder:
        tracker = Tracker(f"sqlite:///{Path(folder) / 'mlflow.db'}")
        experiment = tracker.experiment("bench")
        parent = tracker.start_parent(experiment, "bench", REPO / "studies" / "linearity.toml", 1, {})
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            run_id = tracker.start_trial(experiment, parent, trial, {"device": "cpu"})
            for epoch in range(1, 6):
                tracker.log_metrics(run_id, metrics, step=epoch)
            tracker.log_metrics(run_id, {"test_accuracy": 0.9, "test_loss": 0.1}, step=5)
            tracker.finish(run_id)
            times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


SECTIONS = ("roofline", "epochs", "conv", "packing", "study", "overhead", "startup")
# the roofline's large GEMM (n × n × n) and conv (N, C, H, W; 3×3, C → C)
GEMM_SIZE, CONV_SHAPE = 2048, (64, 64, 56, 56)


def roofline(threads: int, repeats: int) -> dict[str, float]:
    """The machine's achievable float32 throughput with `threads` threads, GFLOP/s: a large GEMM, and a large 3×3
    convolution's forward plus backward (what training runs), each the median of `repeats` timed calls after one
    untimed. The yardstick for an epoch's achieved GFLOP/s: no small network does better than these."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(GEMM_SIZE, GEMM_SIZE), torch.randn(GEMM_SIZE, GEMM_SIZE)
    n, c, h, w = CONV_SHAPE
    conv = nn.Conv2d(c, c, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.randn(n, c, h, w).contiguous(memory_format=torch.channels_last).requires_grad_(True)

    def conv_step() -> None:
        conv(x).sum().backward()

    gemm_flop, conv_flop = 2 * GEMM_SIZE**3, 3 * 2 * n * c * h * w * c * 9
    try:
        gemm = gemm_flop / median_of(repeats, lambda: _seconds(lambda: a @ b), warm=True) / 1e9
        convolution = conv_flop / median_of(repeats, lambda: _seconds(conv_step), warm=True) / 1e9
    finally:
        torch.set_num_threads(previous)
    print(f"roofline, {threads} thread(s): GEMM {gemm:.0f} GFLOP/s, conv {convolution:.0f} GFLOP/s", flush=True)
    return {"gemm": gemm, "conv": convolution}


def _seconds(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def epoch_flop(settings, data) -> float:
    """Floating-point operations of one engine epoch: 2 per multiply-accumulate forward, backward twice the forward
    (6 per MAC per training image), plus the validation pass (2 per MAC per image)."""
    macs = models.macs(settings.model, MNIST)
    return 6 * macs * len(data.train) + 2 * macs * len(data.val)


def roofline_section(roofs: dict[int, dict[str, float]]) -> list[str]:
    return [
        "## The machine's roofline", "",
        "| threads | GEMM (GFLOP/s) | conv forward + backward (GFLOP/s) |", "|---|---|---|",
        *[f"| {t} | {r['gemm']:.0f} | {r['conv']:.0f} |" for t, r in sorted(roofs.items())], "",
        f"GEMM: {GEMM_SIZE}³ float32 matmul. Conv: a 3×3 convolution, {CONV_SHAPE[1]} → {CONV_SHAPE[1]} channels on "
        f"{CONV_SHAPE[0]} × {CONV_SHAPE[2]}×{CONV_SHAPE[3]} maps, channels-last, forward and backward. What large, "
        "dense work achieves here: an epoch's GFLOP/s below is read as a fraction of these (conv for CNNs, GEMM "
        "for linear layers).", "",
    ]


def epoch_section(rows, roof: dict[str, float] | None = None) -> list[str]:
    def achieved(row) -> str:
        name, _, engine, flop = row[:4]
        if roof is None or not flop:
            return ""
        bound = roof["conv"] if "model" in name else roof["gemm"]
        return f" {flop / 1e9:.0f} | {flop / engine / 1e9:.1f} | {100 * flop / engine / 1e9 / bound:.0f}% |"

    extra = " GFLOP/epoch | ablate GFLOP/s | of the roofline |" if roof else ""
    return [
        "## One training epoch on 55,000 MNIST images", "",
        f"| model | reference style (s) | ablate engine (s) | ratio |{extra}",
        "|---|---|---|---|" + ("---|---|---|" if roof else ""),
        *[f"| {row[0]} | {row[1]:.2f} | {row[2]:.3f} | ×{row[1] / row[2]:.1f} |{achieved(row)}" for row in rows], "",
        "Reference style: a torchvision-style dataset (PIL image and per-sample transforms), DataLoader with "
        "shuffling (num_workers=0, as the reference projects), `loss.item()` every step. ablate: uint8 data "
        "resident on the device, batches sliced from a device permutation, normalised (and augmented) per batch, "
        "one host sync per epoch; its time includes the epoch's validation pass over 5,000 images.", "",
    ]


def study_section(study: tuple[float, float, float, int], epochs: int, pack: int) -> list[str]:
    reference, ablate, packed, trials = study
    return [
        f"## A study: {trials} trials of studies/ablations.toml (init × dropout × batchnorm at a constant rate, "
        f"seed 0), {epochs} epochs each", "",
        "| runner | wall (s) | runs/hour | ratio |", "|---|---|---|---|",
        f"| sequential reference-style loop (no logging) | {reference:.1f} | {3600 * trials / reference:.0f} | ×1.0 |",
        f"| `ablate run` (workers, MLflow logging, report) | {ablate:.1f} | {3600 * trials / ablate:.0f} | "
        f"×{reference / ablate:.1f} |",
        f"| `ablate run --pack {pack}` (the same, trials packed by architecture) | {packed:.1f} | "
        f"{3600 * trials / packed:.0f} | ×{reference / packed:.1f} |", "",
        f"Packed against unpacked `ablate run`: ×{ablate / packed:.2f} the runs/hour.", "",
    ]


def packing_section(rows: dict[int, list[tuple[str, float, float]]]) -> list[str]:
    ks = sorted(rows)
    title = f"{ks[0]} trials" if len(ks) == 1 else f"K = {', '.join(map(str, ks))} trials"
    return [
        f"## Packing: {title} of one architecture, one epoch each, in one process", "",
        "| model | K | one after another (s) | packed (s) | ratio |", "|---|---|---|---|---|",
        *[f"| {name} | {k} | {one:.2f} | {pk:.2f} | ×{one / pk:.2f} |" for k in ks for name, one, pk in rows[k]], "",
        "Both sides are ablate's engine on the same data (seeds 0 to K−1, training plus validation); packed trials "
        "give the single runs' metrics to float tolerance (tests/engine/test_pack.py). A packed step does the same "
        "arithmetic as K single steps in fewer, larger kernels: it pays where a step is small next to its fixed "
        "cost per kernel, as on a GPU, and is about neutral where the CPU's cores are already busy with the "
        "arithmetic.", "",
    ]


def overhead_section(help_s: float, plan_s: float, bookkeeping: float) -> list[str]:
    return [
        "## Overhead", "",
        "| what | measured | goal |", "|---|---|---|",
        f"| `ablate --help` start | {help_s:.2f} s | < 1 s |",
        f"| `ablate plan studies/linearity.toml` | {plan_s:.2f} s | < 1 s |",
        f"| per-trial MLflow bookkeeping (run, params, 5 epochs of metrics, end; SQLite) | {bookkeeping:.0f} ms | < "
        "100 ms |",
        "",
    ]


def startup_section(found: dict[str, list[dict[str, float]]], repeats: int) -> list[str]:
    return [
        "## Time to the first training step", "",
        f"`ablate run studies/linearity.toml` on a new store, seconds from the command's start to each phase (the "
        f"first mark of it in any of the run's processes: ABLATE_TIMELINE, benchmarks/startup.py), medians of "
        f"{repeats}; with several checkouts, started in turns.", "",
        *startup_table(found), "",
        "A new SQLite store is a copy of the empty store MLflow's migrations built the first time (kept in "
        "~/.cache/ablate; one start per checkout before the measured ones builds it): the very first store on a "
        "machine takes the migrations' seconds once.", "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--study-epochs", type=int, default=5)
    parser.add_argument("--pack", type=int, default=4, help="trials per pack in the study measurement")
    parser.add_argument("--ks", default=None, metavar="K,K,...",
                        help="pack sizes of the packing measurement (default: --pack)")
    parser.add_argument("--sections", default=",".join(SECTIONS), metavar="S,S,...",
                        help=f"what to measure, of {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--startup-trees", default=f"now={REPO}", metavar="NAME=DIR,...",
                        help="checkouts of ablate whose start-up to measure, in turns (default: this one), e.g. "
                             "before=/tmp/old,now=.")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the raw numbers here")
    parser.add_argument("--out", default=str(REPO / "results" / "benchmarks.md"))
    args = parser.parse_args()
    sections = args.sections.split(",")
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    ks = [int(k) for k in (args.ks or str(args.pack)).split(",")]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(os.cpu_count() or 1)
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{cpu_model()}, {os.cpu_count()} cores"
    started = time.perf_counter()
    raw: dict = {"device": device.type, "hardware": hardware, "torch": torch.__version__,
                 "cuda": torch.version.cuda if device.type == "cuda" else None}
    body: list[str] = []
    roofs = {}
    if device.type == "cpu" and {"roofline", "epochs", "conv"} & set(sections):
        roofs = {t: roofline(t, args.repeats) for t in sorted({1, os.cpu_count() or 1})}
        raw["roofline"] = roofs
        body += roofline_section(roofs)
    if "epochs" in sections:
        raw["epochs"] = epoch_rows(args.repeats, device)
        body += epoch_section(raw["epochs"], roofs.get(torch.get_num_threads()))
    if "conv" in sections and device.type == "cpu":
        raw["conv"] = conv_rows(args.repeats, device)
        raw["conv_options"] = conv_options(device)
        raw["dropout_ms"] = dropout_ms(max(args.repeats, 5))
        body += conv_section(raw["conv"], raw["conv_options"], roofs[1], raw["dropout_ms"])
    if "study" in sections:
        raw["study"] = study_rows(args.study_epochs, device, args.pack)
        body += study_section(raw["study"], args.study_epochs, args.pack)
    if "packing" in sections:
        raw["packing"] = {k: pack_epoch_rows(args.repeats, device, k) for k in ks}
        body += packing_section(raw["packing"])
    if "overhead" in sections:
        raw["overhead"] = (startup_seconds(["--help"], 5), startup_seconds(["plan", "studies/linearity.toml"], 5),
                           bookkeeping_ms(20))
        body += overhead_section(*raw["overhead"])
    if "startup" in sections:
        trees = {name: Path(path).resolve() for name, path in
                 (item.split("=", 1) for item in args.startup_trees.split(","))}
        raw["startup"] = measure_startup(trees, max(args.repeats, 3))
        body += startup_section(raw["startup"], max(args.repeats, 3))
    raw["seconds"] = time.perf_counter() - started
    lines = [
        "# Benchmarks", "",
        f"`python benchmarks/bench.py` on {hardware} ({device.type}), torch {torch.__version__}; "
        f"{raw['seconds']:.0f} s for the whole script. Medians over {args.repeats} repeats; "
        "ratio = reference ÷ ablate (above 1: ablate is faster).", "", *body,
    ]
    Path(args.out).write_text("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
