"""Export: a study's saved models out of MLflow, as files that load with torch alone.

Owns `ablate export`: for each arm (or one), the run whose model stands for it (ablate.tracking's
models), written as a folder — the network's state dict, the resolved settings that rebuild it
(`rebuild`), a torch.export program (TorchScript where the network does not export) that takes raw
images, and a README saying how to load each — and, on request, registered in MLflow's model
registry.

May import: ablate.tracking, ablate.spec, ablate.models, ablate.engine, ablate.errors; torch and
MLflow (the command needs both).
"""

from ablate.export._export import Exported, export_models, load_saved, rebuild

__all__ = ["Exported", "export_models", "load_saved", "rebuild"]
