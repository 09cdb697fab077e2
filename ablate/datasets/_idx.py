"""IDX, the file format of MNIST and the MNIST-like sets: a magic number, the dimensions, then the bytes."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from ablate.errors import AblateError

UNSIGNED_BYTE = 0x08  # the data type code of every MNIST-like file


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes, gzipped or not; a damaged file is an error naming it."""
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:  # a truncated or corrupt download
        raise damaged(path, f"{type(exc).__name__}: {exc}") from exc
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != UNSIGNED_BYTE:
        raise damaged(path, "it does not start as an IDX file of bytes")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise damaged(path, f"it holds {len(raw):,} bytes where its header promises {expected:,}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def damaged(path: Path, why: str) -> AblateError:
    return AblateError(f"data file {path.resolve()} is damaged ({why}): delete it and download it again (ablate "
                       "downloads missing files when the network allows), or copy a good one there")
