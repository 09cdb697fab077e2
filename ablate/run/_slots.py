"""Worker slots: which devices a run uses, how many workers each, and the threads each worker gets."""

from __future__ import annotations

import os
import platform
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ablate.errors import AblateError
from ablate.spec import ExecutionSettings


@dataclass(frozen=True)
class Slot:
    """One worker's place: its index, its device ('cpu' or 'cuda:N') and its torch CPU threads."""

    index: int
    device: str
    threads: int
    cluster: str = ""  # the cluster whose scheduler places this slot's worker on a node; "": this machine


def plan_slots(
    devices: str | tuple[int, ...], workers_per_device: int | None, max_workers: int | None, cuda_count: int,
    cpu_cores: int,
) -> list[Slot]:
    """Worker slots for the devices asked for and the devices visible.

    `auto` is every visible GPU, else the CPU. Slots go round-robin over the devices, so a
    `max_workers` below the total still spreads over every GPU. A CPU worker uses one torch
    thread — float sums in another order would make a result depend on the worker count —
    and by default there is one per core; GPU workers share the cores out between them.
    """
    if devices == "cpu" or (devices == "auto" and cuda_count == 0):
        names = ["cpu"]
    elif devices == "auto":
        names = [f"cuda:{i}" for i in range(cuda_count)]
    else:
        missing = [i for i in devices if i >= cuda_count]
        if missing:
            visible = f"{cuda_count} visible" if cuda_count else "none visible"
            raise AblateError(f"devices {list(devices)}: there is no GPU {missing[0]} here ({visible})")
        names = [f"cuda:{i}" for i in dict.fromkeys(devices)]
    on_cpu = names == ["cpu"]
    per_device = workers_per_device or (cpu_cores if on_cpu else 1)
    count = len(names) * per_device
    if max_workers is not None:
        count = min(count, max_workers)
    threads = 1 if on_cpu else max(1, cpu_cores // count)
    return [Slot(index=k, device=names[k % len(names)], threads=threads) for k in range(count)]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


def hardware(slots: list[Slot]) -> str:
    """The processors a run used and how it used them, as a results table should name them."""
    devices = sorted({s.device for s in slots})
    if slots and slots[0].cluster:
        kind = "CPU worker(s), 1 thread each" if devices == ["cpu"] else "GPU worker(s)"
        return f"{slots[0].cluster}: {len(slots)} {kind}"
    if devices == ["cpu"]:
        return f"{cpu_model()}, {len(slots)} worker(s) × {slots[0].threads} thread(s)"
    import torch  # a GPU run's: a CPU run's parent never imports torch

    names = sorted({torch.cuda.get_device_name(torch.device(d)) for d in devices})
    per = len(slots) // len(devices)
    return f"{len(devices)} × {', '.join(names)} (CUDA {torch.version.cuda}), {per} worker(s) per GPU"


def plan_slots_for(execution: ExecutionSettings) -> list[Slot]:
    import joblib

    return plan_slots(execution.devices, execution.workers_per_device, execution.max_workers,
                      cuda_count(execution.devices), joblib.cpu_count())


# Device files a GPU torch could use shows up as: NVIDIA's driver, AMD's ROCm (kfd), WSL's GPU bridge (dxg).
GPU_DEVICE_FILES = ("nvidia", "kfd", "dxg")


def cuda_count(devices: str | tuple[int, ...] = "auto") -> int:
    """The GPUs torch sees. Asking torch costs its import (a second or more) in a process that otherwise never
    needs it, so it is asked only when the devices asked for are not `cpu` and the machine has a GPU's device
    file at all: without one no GPU is visible to anything."""
    if devices == "cpu":
        return 0
    try:
        if not any(name.startswith(GPU_DEVICE_FILES) for name in os.listdir("/dev")):
            return 0
    except OSError:  # no /dev to look in (not Linux): torch says
        pass
    import torch

    return torch.cuda.device_count()


FITS = 0.9  # of a device's free memory the resident data may take: the rest is for models, activations and slack


def check_memory(slots: list[Slot], needs: dict[str, int]) -> None:
    """Refuse, before any run starts, a study whose data would not fit: every worker loads its own resident copy,
    so a device needs (its workers) × (one worker's data) free."""
    per_worker = sum(needs.values())
    for device, workers in Counter(s.device for s in slots).items():
        free = free_memory(device)
        if free is None or workers * per_worker <= FITS * free:
            continue
        held = ", ".join(f"{title} {size / MB:,.0f} MB" for title, size in needs.items())
        raise AblateError(
            f"the data would not fit on {device}: {workers} worker(s) each hold it resident ({held}), "
            f"{workers * per_worker / MB:,.0f} MB in all, and {device} has {free / MB:,.0f} MB free. Use fewer workers "
            "(--workers-per-device or --max-workers), a smaller data.train_limit, or a device with more memory"
        )


MB = 1e6


def free_memory(device: str) -> int | None:
    """Free bytes on a device: a GPU's as CUDA reports it; the host's available memory for the CPU (None where the
    system does not say)."""
    if device != "cpu":
        return _gpu_free(device)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _gpu_free(device: str) -> int:
    """Through NVML where pynvml is installed: asking CUDA itself (mem_get_info) would open a CUDA context on every
    GPU in this driver process, half a gigabyte each held for the whole run."""
    import torch

    index = torch.device(device)
    try:
        return torch.cuda.get_device_properties(index).total_memory - torch.cuda.device_memory_used(index)
    except (ImportError, AttributeError):  # no pynvml (torch raises ModuleNotFoundError), or an older torch
        return torch.cuda.mem_get_info(index)[0]
