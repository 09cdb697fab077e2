"""Keep a CPU worker's activation memory on the heap instead of mapping it fresh every step.

glibc's malloc serves allocations above its mmap threshold (128 KiB at start, raised only as
mapped chunks are freed) with fresh pages from the kernel, and every first touch of those
pages faults. A CNN's activations (a few MB per layer per batch) sit above it, so until the
threshold has crept up, each training step pays page faults for all of them: the first epoch
of system C's model 1 packed by 3 took 9.3 s per trial in a fresh process against 6.3 s once
warm, and a few-step probe (`pack = "auto"`) measured mostly faults. Fixed thresholds make the
first step as fast as the thousandth. Linux with glibc only; elsewhere nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
MMAP_THRESHOLD, TRIM_THRESHOLD = 256 << 20, 512 << 20


def steady_allocations() -> bool:
    """Raise this process's mmap and trim thresholds; True when glibc took them."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD,
                                                                                          TRIM_THRESHOLD))
    except (OSError, AttributeError):  # not glibc (macOS, musl): its allocator is left as it is
        return False
