"""The speed options that only pay on a GPU, each measured on and off in one run: bf16 autocast,
channels-last convolutions, torch.compile (default and "reduce-overhead"), a CUDA graph of the
whole training step, and a pinned host → device copy of the data; then the torch profiler's view
of where a step's time goes.

    python benchmarks/gpu_options.py --json options.json [--quick]

Every variant trains the same model from the same seed on the same resident data with the loop
ablate's engine runs (`ablate.engine._train._train_epoch`: batches sliced from a device
permutation, normalised and augmented on the device, one host sync per epoch), so the only
difference between two rows is the option. Each row states its steady epoch time (the median of
the epochs after the first, which pays for compilation or capture), its first epoch, and the
validation and test accuracy its weights reach, so an option that changes the results shows it.
It runs on the CPU too (`--quick`, to check the script), where CUDA-only rows are skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ablate import datasets, models  # noqa: E402
from ablate.design import expand  # noqa: E402
from ablate.engine._augment import AUGMENT_SEED_OFFSET, augment_batch  # noqa: E402
from ablate.engine._graph import EagerStep, GraphStep  # noqa: E402
from ablate.engine._optim import StepRates, make_loss, make_optimizer  # noqa: E402
from ablate.engine._train import _Epochs, _train_epoch, evaluate  # noqa: E402
from ablate.spec import load_study  # noqa: E402


def stage(study: str, name: str):
    return {t.stage: t.settings for t in expand(load_study(REPO / "studies" / study))}[name]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Setup:
    """A fresh model, optimiser and generators for one variant, from the trial's seed, as train_trial builds them."""

    def __init__(self, settings, data, device, channels_last: bool = False, capturable: bool = False):
        dataset = datasets.get(settings.dataset)
        train = settings.train
        torch.manual_seed(settings.seed)
        model = models.build_model(settings.model, dataset)
        models.initialise(model, train.init)
        self.model = model.to(device, memory_format=torch.channels_last) if channels_last else model.to(device)
        self.optimizer = make_optimizer(self.model, train)
        if capturable:  # Adam keeps its step count on the device, so a captured step can advance it
            for group in self.optimizer.param_groups:
                group["capturable"] = True
        steps = math.ceil(len(data.train) / train.batch_size)
        self.loss_fn = make_loss(train.loss, dataset.classes, train.label_smoothing)
        self.eval_loss = make_loss(train.loss, dataset.classes)
        self.steps = steps
        self.generator = torch.Generator(device=device).manual_seed(settings.seed)
        self.augment_generator = torch.Generator(device=device).manual_seed(settings.seed + AUGMENT_SEED_OFFSET)
        self.settings, self.data, self.device = settings, data, device

    def epochs(self, model: nn.Module | None = None, graph_safe: bool = False, capture: bool = False) -> _Epochs:
        """What the engine's epochs run: today's eager step, or the graph-safe one (captured with `capture`)."""
        train, model = self.settings.train, model or self.model
        step = (GraphStep(model, train, self.loss_fn, self.device, self.steps, capture) if graph_safe
                else EagerStep(model, self.optimizer, self.loss_fn, train.grad_clip, self.device))
        return _Epochs(step=step, rates=StepRates(train, self.steps), augment=train.augment,
                       augment_generator=self.augment_generator)

    def train_epoch(self, epochs: _Epochs, data) -> None:
        _train_epoch(epochs, data, self.settings.train.batch_size, self.generator, epochs.rates.epoch())

    def accuracies(self, model: nn.Module | None = None) -> tuple[float, float]:
        model = model or self.model
        _, val = evaluate(model, self.data.val, self.data, self.eval_loss)
        _, test = evaluate(model, self.data.test, self.data, self.eval_loss)
        return val, test


class Wrapped(nn.Module):
    """The model behind an input conversion (channels-last) and/or autocast, so the engine's own loop runs it."""

    def __init__(self, model: nn.Module, channels_last: bool, autocast: bool):
        super().__init__()
        self.model, self.channels_last, self.autocast = model, channels_last, autocast

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        context = torch.autocast("cuda", dtype=torch.bfloat16) if self.autocast else contextlib.nullcontext()
        with context:
            return self.model(images).float()  # the loss and the accuracy in float32, as without autocast


def timed_epochs(run_epoch, epochs: int, device) -> list[float]:
    seconds = []
    for _ in range(epochs):
        sync(device)
        started = time.perf_counter()
        run_epoch()
        sync(device)
        seconds.append(time.perf_counter() - started)
    return seconds


def engine_variant(settings, data, device, epochs: int, channels_last=False, autocast=False, compile_mode=None,
                   graph_safe=False, capture=False):
    setup = Setup(settings, data, device, channels_last=channels_last)
    model: nn.Module = setup.model
    if channels_last or autocast:
        model = Wrapped(model, channels_last, autocast)
    if compile_mode is not None:
        model = torch.compile(model, mode=compile_mode)
    run = setup.epochs(model, graph_safe, capture)

    def run_epoch():
        if compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        setup.train_epoch(run, data)

    seconds = timed_epochs(run_epoch, epochs, device)
    return seconds, setup.accuracies(model)


class GraphedStep:
    """The whole training step (gather, normalise, forward, loss, backward, Adam, the running sums) captured once in
    a CUDA graph and replayed for every full batch: one launch per step instead of dozens. The batch is chosen by
    copying its indices into a static buffer; the last, shorter batch of an epoch runs eagerly."""

    WARMUP = 3  # eager steps on a side stream before capture, as the CUDA graph notes ask (they are real steps)

    def __init__(self, setup: Setup):
        self.setup, self.data = setup, setup.data
        bs = setup.settings.train.batch_size
        device = setup.device
        self.index = torch.zeros(bs, dtype=torch.long, device=device)
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.graph: torch.cuda.CUDAGraph | None = None

    def eager(self, index: torch.Tensor) -> None:
        s = self.setup
        images, labels = self.data.train.images[index], self.data.train.labels[index]
        if s.settings.train.augment.active:
            images = augment_batch(images.float(), s.settings.train.augment, s.augment_generator)
        logits = s.model(self.data.normalise(images))
        loss = s.loss_fn(logits, labels)
        loss.backward()
        s.optimizer.step()
        self.loss_sum += loss.detach() * labels.shape[0]
        self.correct += (logits.detach().argmax(dim=1) == labels).sum()

    def capture(self, order: torch.Tensor) -> None:
        s, bs = self.setup, self.index.shape[0]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for number in range(self.WARMUP):
                s.optimizer.zero_grad(set_to_none=True)
                self.eager(order[number * bs:(number + 1) * bs])
        torch.cuda.current_stream().wait_stream(side)
        s.optimizer.zero_grad(set_to_none=True)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.eager(self.index)

    def epoch(self) -> None:
        s, bs = self.setup, self.index.shape[0]
        s.model.train()
        n = len(self.data.train)
        order = torch.randperm(n, device=s.device, generator=s.generator)
        first = 0
        if self.graph is None:
            self.capture(order)
            first = self.WARMUP
        for start in range(first * bs, n - bs + 1, bs):
            self.index.copy_(order[start:start + bs])
            self.graph.replay()
        rest = n % bs
        if rest:
            for parameter in s.model.parameters():  # the graph's gradients are overwritten by each replay;
                if parameter.grad is not None:     # the eager step accumulates, so it starts from zero
                    parameter.grad.zero_()
            self.eager(order[n - rest:])
        self.loss_sum.item()  # one host sync per epoch, as in the engine


def graphed_variant(settings, data, device, epochs: int):
    if settings.train.schedule.kind != "constant" or settings.train.grad_clip is not None:
        raise ValueError("this measurement captures constant-rate steps without clipping only")
    setup = Setup(settings, data, device, capturable=True)
    graphed = GraphedStep(setup)
    seconds = timed_epochs(graphed.epoch, epochs, device)
    return seconds, setup.accuracies()


def row(name: str, option: str, seconds: list[float], accuracies: tuple[float, float]) -> dict:
    steady = statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]
    return {"model": name, "option": option, "first_epoch_s": seconds[0], "epoch_s": steady,
            "val_accuracy": accuracies[0], "test_accuracy": accuracies[1], "epochs": len(seconds)}


def variants(name: str, conv: bool, cuda: bool):
    yield "eager (today's engine)", {}
    yield "the engine's graph-safe step, eager", {"graph_safe": True}
    if cuda:
        yield "the engine's graph-safe step, captured (graphs = \"auto\")", {"graph_safe": True, "capture": True}
    if cuda:
        yield "bf16 autocast", {"autocast": True}
    if conv:
        yield "channels-last", {"channels_last": True}
        if cuda:
            yield "channels-last + bf16", {"channels_last": True, "autocast": True}
    yield "torch.compile", {"compile_mode": "default"}
    if cuda:
        yield "torch.compile reduce-overhead (CUDA graphs)", {"compile_mode": "reduce-overhead"}
        if not conv:
            yield "CUDA graph of the whole step", {"graphed": True}


def option_rows(device, epochs: int, seeds: list[int], models_: list) -> list[dict]:
    rows = []
    for name, settings, conv in models_:
        data = datasets.load(settings.dataset, settings.data, REPO / "data", device)
        for option, kwargs in variants(name, conv, device.type == "cuda"):
            # Compilation is paid per model: one seed shows its speed; the seed spread comes from the others.
            for seed in seeds if not (conv or "compile_mode" in kwargs) else seeds[:1]:
                trial = replace(settings, seed=seed)
                try:
                    if kwargs.get("graphed"):
                        seconds, acc = graphed_variant(trial, data, device, epochs)
                    else:
                        seconds, acc = engine_variant(trial, data, device, epochs, **kwargs)
                    rows.append({**row(name, option, seconds, acc), "seed": seed})
                except Exception as error:  # a failing option is a finding, not the end of the run
                    traceback.print_exc()
                    rows.append({"model": name, "option": option, "seed": seed, "error": f"{type(error).__name__}: "
                                                                                         f"{error}"[:300]})
                print(json.dumps(rows[-1]), flush=True)
                torch._dynamo.reset()
    return rows


def pinned_rows(device, repeats: int = 5) -> list[dict]:
    """Host → device copy of a dataset, once per worker: pageable against pinned (the pinning counted)."""
    if device.type != "cuda":
        return []
    arrays = datasets.read_arrays("mnist", REPO / "data")
    sources = {"MNIST train images (47 MB)": torch.from_numpy(arrays["train_images"].copy()),
               "CIFAR-10-sized train images (154 MB)": torch.randint(0, 256, (50_000, 3, 32, 32), dtype=torch.uint8)}
    rows = []
    for name, host in sources.items():
        def pageable(host=host):
            sync(device)
            started = time.perf_counter()
            host.to(device)
            sync(device)
            return time.perf_counter() - started

        def pinned(host=host):
            sync(device)
            started = time.perf_counter()
            host.pin_memory().to(device, non_blocking=True)
            sync(device)
            return time.perf_counter() - started

        pageable(), pinned()  # warm
        rows.append({"data": name, "pageable_ms": 1000 * statistics.median(pageable() for _ in range(repeats)),
                     "pinned_ms": 1000 * statistics.median(pinned() for _ in range(repeats))})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def profile(settings, device, graphed: bool, steps: int = 50) -> dict:
    """The torch profiler over `steps` training steps: kernel launches and host syncs per step, top CUDA ops."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    data = datasets.load(settings.dataset, settings.data, REPO / "data", device)
    small = replace(data, train=datasets.Split(data.train.images[: steps * settings.train.batch_size],
                                               data.train.labels[: steps * settings.train.batch_size]))
    setup = Setup(settings, small, device, capturable=graphed)
    graphed_step = GraphedStep(setup) if graphed else None
    run = setup.epochs()

    def epoch():
        if graphed_step is not None:
            graphed_step.epoch()
        else:
            setup.train_epoch(run, small)

    epoch()  # warm (and capture)
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        epoch()
        sync(device)
    events = prof.key_averages()
    count = {e.key: e.count for e in events}
    launches = sum(n for key, n in count.items() if key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC",
                                                            "cuLaunchKernelEx", "cudaGraphLaunch"))
    syncs = sum(n for key, n in count.items() if key in ("cudaStreamSynchronize", "cudaDeviceSynchronize"))
    copies = sum(n for key, n in count.items() if key in ("cudaMemcpyAsync", "cudaMemcpy"))
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return {"graphed": graphed, "steps": steps, "launches_per_step": launches / steps, "syncs_per_epoch": syncs,
            "memcpy_calls": copies, "table": events.table(sort_by=sort, row_limit=12, max_name_column_width=60)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", required=True, metavar="FILE")
    parser.add_argument("--quick", action="store_true", help="a few hundred images and 2 epochs: checks the script")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    mlp = stage("linearity.toml", "mlp")
    model3 = stage("cnn8k.toml", "model3")
    epochs, seeds = (2, [0]) if args.quick else (5, [0, 1, 2])
    if args.quick:
        mlp = replace(mlp, data=replace(mlp.data, train_limit=2048, test_limit=1000))
        model3 = replace(model3, data=replace(model3.data, train_limit=512, test_limit=500))
    started = time.perf_counter()
    out = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "torch": torch.__version__, "cuda": torch.version.cuda, "epochs": epochs, "seeds": seeds}
    out["options"] = option_rows(device, epochs, seeds, [("MLP-256 (batch 256)", mlp, False)])
    out["options"] += option_rows(device, 3 if not args.quick else 2, [0],
                                  [("system C model 3 (batch 64)", model3, True)])
    out["pinned"] = pinned_rows(device)
    out["profiles"] = []
    for graphed in ([False, True] if device.type == "cuda" else [False]):
        try:
            out["profiles"].append(profile(mlp, device, graphed))
        except Exception as error:
            traceback.print_exc()
            out["profiles"].append({"graphed": graphed, "error": f"{type(error).__name__}: {error}"[:300]})
        print(out["profiles"][-1].get("table", out["profiles"][-1].get("error")), flush=True)
    out["seconds"] = time.perf_counter() - started
    Path(args.json).write_text(json.dumps(out, indent=1))
    failed = [r for r in out["options"] if "error" in r]
    print(f"{len(out['options'])} option rows, {len(failed)} failed; {out['seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
