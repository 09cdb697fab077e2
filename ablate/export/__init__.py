"""Export: a study's saved models out of MLflow, as files that load with torch alone.

Owns `ablate export`: for each arm (or one), the run whose model stands for it (ablate.tracking's
models), written as a folder — the network's state dict, the resolved settings that rebuild it
(`rebuild`), a torch.export program (TorchScript where the network does not export) and/or an ONNX
file checked with onnxruntime (`--format onnx`, at ONNX_OPSET), each taking raw images, and a README
saying how to load each — and, on request, registered in MLflow's model registry. Owns reading a
saved model back too (`load_saved`, for export and the report's figures), without running anything
the store holds (_read.py says how). Export writes only inside --out,
follows no link out of it, and replaces only its own files, and those only with --force.

May import: ablate.tracking, ablate.spec, ablate.models, ablate.datasets, ablate.engine, ablate.errors;
torch and MLflow (the command needs both); onnx, onnxruntime and onnxscript for --format onnx only.
"""

from ablate.export._export import FORMATS, Exported, export_models
from ablate.export._onnx import ONNX_OPSET, ONNX_TOLERANCE
from ablate.export._read import load_saved, rebuild

__all__ = ["FORMATS", "ONNX_OPSET", "ONNX_TOLERANCE", "Exported", "export_models", "load_saved", "rebuild"]
