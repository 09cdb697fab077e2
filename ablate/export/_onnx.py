"""`ablate export --format onnx`: a saved model as an ONNX file, checked with onnxruntime before it is written.

The network (behind its normalisation: raw images in, class scores out) goes through torch's ONNX exporter
(torch.onnx.export with dynamo=True, which needs onnxscript) at opset ONNX_OPSET, its batch axis dynamic. Before
anything is written, onnxruntime runs the file on real inputs — up to CHECK_IMAGES of the dataset's test images
where its files are in the data folder, else the probe images the model was saved with — in a batch of one and a
batch of all of them, through the same file; scores further than ONNX_TOLERANCE from torch's refuse the export.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ablate import datasets
from ablate.engine import Classifier
from ablate.errors import AblateError

# The opset torch's exporter writes natively (onnxscript's torch library is written at it, so no version conversion
# runs) and onnxruntime runs from 1.14 on; newer opsets add no operator these networks use.
ONNX_OPSET = 18
ONNX_TOLERANCE = 1e-5  # the largest difference from torch's class scores the check accepts
CHECK_IMAGES = 100  # test images the check runs
ONNX_PACKAGES = ("onnx", "onnxruntime", "onnxscript")  # what --format onnx imports: the `onnx` extra


@dataclass(frozen=True)
class OnnxModel:
    data: bytes  # the ONNX file
    checked: str  # what it was checked on, and how close it came, for the command's output


def require_onnx() -> None:
    """One line telling the user what to install when --format onnx cannot run here."""
    import importlib.util

    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise AblateError(f"ablate export --format onnx needs {', '.join(missing)} (not installed in this Python): "
                          "pip install 'ablate[onnx]'")


def to_onnx(model: Classifier, about: dict[str, Any], probe: torch.Tensor, arm: str, data_dir: str | None = None
            ) -> OnnxModel:
    """The model as an ONNX file, checked against torch on real inputs (the test images in `data_dir`, else in
    ablate.datasets' data_folder); AblateError (nothing written) where torch cannot export it or onnxruntime's scores
    differ from torch's by more than ONNX_TOLERANCE."""
    data = _exported(model, probe, arm)
    images, what = _check_images(about, probe, datasets.data_folder(data_dir))
    difference = _difference(model, data, images)
    batches = f"batches of 1 and {len(images)}" if len(images) > 1 else "a batch of 1"
    if not difference <= ONNX_TOLERANCE:  # NaN included
        raise AblateError(f"arm {arm}: its ONNX model's scores differ from torch's by up to {difference:.3g} on {what} "
                          f"({batches}), more than {ONNX_TOLERANCE:g}, so ablate wrote nothing; export it with "
                          "--format pt2")
    return OnnxModel(data, f"ONNX opset {ONNX_OPSET}, checked with onnxruntime on {what} ({batches}): scores "
                           f"within {difference:.2g} of torch's")


def _exported(model: Classifier, probe: torch.Tensor, arm: str) -> bytes:
    try:
        # The exporter's notes on torch internals (and, where it fails, the graph it got): nothing a user acts on.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model.eval(), (probe,), dynamo=True, opset_version=ONNX_OPSET,
                                        input_names=["images"], output_names=["scores"], verbose=False,
                                        dynamic_shapes=({0: torch.export.Dim("batch")},))
        return program.model_proto.SerializeToString()
    except Exception as exc:  # noqa: BLE001 — a network torch cannot export (Python control flow, an operator)
        reason = exc.__cause__ or exc  # torch.onnx's own error wraps torch.export's, which says why
        first = re.sub(r"\x1b\[[0-9;]*m", "", str(reason)).strip().splitlines()
        raise AblateError(f"arm {arm}: torch cannot export its network to ONNX ({type(reason).__name__}"
                          f"{': ' + first[0] if first else ''}); export it with --format pt2") from exc


def _check_images(about: dict[str, Any], probe: torch.Tensor, root: Path) -> tuple[torch.Tensor, str]:
    """The first CHECK_IMAGES test images of the model's dataset where its files are in the data folder (a factory's
    data is not made again here: that would run its code), else the probe images."""
    name = str(about["settings"]["dataset"])
    if not datasets.is_factory_key(name) and datasets.data_files(name, root).state == "present":
        test = datasets.read_arrays(name, root, download=False)["test_images"][:CHECK_IMAGES]
        return torch.from_numpy(test.copy()).to(probe.dtype), f"{len(test)} {name} test images"
    return probe, f"the {len(probe)} random probe images it was saved with, as {name}'s test images are not in {root}"


def _difference(model: Classifier, data: bytes, images: torch.Tensor) -> float:
    """The largest difference between torch's scores and onnxruntime's, over a batch of one image and a batch of
    all of them (the batch axis is dynamic: one file serves both)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    largest = 0.0
    with torch.inference_mode():
        for batch in (images[:1], images) if len(images) > 1 else (images,):
            expected = model(batch)
            got = torch.from_numpy(session.run(["scores"], {"images": batch.numpy()})[0])
            if got.shape != expected.shape:
                return float("inf")
            difference = (got - expected).abs().max()
            largest = max(largest, float(difference) if torch.isfinite(difference) else float("inf"))
    return largest
