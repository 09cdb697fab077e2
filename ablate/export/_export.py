"""A study's saved models → folders that need no MLflow (see the package docstring)."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ablate import datasets, models
from ablate.engine import Classifier
from ablate.errors import AblateError
from ablate.spec import model_from_dict
from ablate.tracking import MODEL_ARTIFACT, MODEL_SETTINGS, STAGE_INDEX, Tracker, model_runs, store_label

PROGRAM, SCRIPT, STATE = "model.pt2", "model.ts", "state_dict.pt"


@dataclass
class Exported:
    arm: str
    run_id: str
    test_accuracy: float
    folder: Path | None = None
    files: list[str] = field(default_factory=list)
    registered: str | None = None  # "name version N"


def rebuild(about: dict[str, Any], state: dict[str, torch.Tensor]) -> Classifier:
    """The saved network from its ablate.json and state dict, with ablate: the network `ablate run` built for those
    settings, behind the normalisation it was trained with (raw images in, class scores out), in eval mode."""
    settings = about["settings"]
    net = models.build_model(model_from_dict(settings["model"]), datasets.get(settings["dataset"]))
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or any(not key.endswith("num_batches_tracked") for key in missing):
        raise AblateError(f"the saved weights do not fit the settings' network: missing {missing}, unexpected "
                          f"{unexpected}")
    mean, std = about["normalise"]["mean"], about["normalise"]["std"]
    if isinstance(mean, list):
        mean, std = (torch.tensor(v, dtype=torch.float32).view(-1, 1, 1) for v in (mean, std))
    return Classifier(net, mean, std, bool(about.get("channels_last"))).eval()


def export_models(uri: str, study: str, arm: str | None, out: Path | None, register: bool) -> list[Exported]:
    """Each arm's model (or `arm`'s) written under out/<arm>/ and/or registered as '<study>-<arm>'."""
    tracker = Tracker(uri)
    found = tracker.client.get_experiment_by_name(study)
    if found is None:
        raise AblateError(f"no study '{study}' in {store_label(uri)}; `ablate report` lists the studies there")
    runs = model_runs(tracker, found.experiment_id)
    if not runs:
        raise AblateError(f"study '{study}' has no saved models in {store_label(uri)}: its trials ran with [tracking] "
                          "models = \"none\" (or before ablate saved models). Finished trials are not trained again, "
                          "so run the study with models = \"best\" into a new store (--tracking-uri)")
    if arm is not None and arm not in runs:
        raise AblateError(f"--arm {arm}: no saved model for that arm of '{study}'; arms with one: "
                          f"{', '.join(sorted(runs))}")
    chosen = {arm: runs[arm]} if arm is not None else runs
    done = []
    for name, run in sorted(chosen.items(), key=lambda item: int(item[1].data.tags.get(STAGE_INDEX, 0))):  # study order
        item = Exported(name, run.info.run_id, run.data.metrics.get("test_accuracy", float("nan")))
        if out is not None:
            item.folder = out / _file_name(name)
            item.files = _write(tracker, run.info.run_id, item.folder)
        if register:
            item.registered = _register(uri, study, name, run.info.run_id)
        done.append(item)
    return done


def _file_name(arm: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=,-]+", "-", arm).strip("-.") or "arm"


def load_saved(tracker: Tracker, run_id: str) -> tuple[Classifier, dict[str, Any], torch.Tensor]:
    """A run's saved model rebuilt as ablate's network (its layers, to look inside or fine-tune), its ablate.json,
    and the probe images it was checked on: the rebuilt network gives the saved MLflow model's very scores."""
    import mlflow.pytorch

    with tempfile.TemporaryDirectory() as scratch:
        local = Path(tracker.client.download_artifacts(run_id, MODEL_ARTIFACT, scratch))
        about = json.loads((local / MODEL_SETTINGS).read_text())
        saved = mlflow.pytorch.load_model(str(local))
    state = {key.removeprefix("net."): value for key, value in saved.state_dict().items() if key.startswith("net.")}
    model = rebuild(about, state)
    shape = datasets.get(about["settings"]["dataset"]).shape
    probe = torch.randint(0, 256, (3, *shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    if "float32" in about["input"]:
        probe = probe.float() / 255
    with torch.inference_mode():
        if not torch.equal(model(probe), saved(probe)):
            raise AblateError(f"run {run_id}: the network rebuilt from its settings does not give the saved model's "
                              "scores")
    return model, about, probe


def _write(tracker: Tracker, run_id: str, folder: Path) -> list[str]:
    """The run's model, rebuilt and checked (load_saved), as plain files in `folder`."""
    model, about, probe = load_saved(tracker, run_id)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    torch.save(model.net.state_dict(), folder / STATE)
    (folder / MODEL_SETTINGS).write_text(json.dumps(about, indent=1))
    program = _compiled(model, probe, folder)
    (folder / "README.md").write_text(_readme(about, program))
    return sorted(p.name for p in folder.iterdir())


def _compiled(model: nn.Module, probe: torch.Tensor, folder: Path) -> str | None:
    """The model as a torch.export program with any batch size, else TorchScript (traced), else None."""
    try:
        program = torch.export.export(model, (probe,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
        torch.export.save(program, folder / PROGRAM)
        return PROGRAM
    except Exception:  # noqa: BLE001 — a custom network with Python control flow: traced instead
        pass
    try:
        torch.jit.save(torch.jit.trace(model, probe), folder / SCRIPT)
        return SCRIPT
    except Exception:  # noqa: BLE001 — neither: the state dict and settings still rebuild it, with ablate
        return None


def _readme(about: dict[str, Any], program: str | None) -> str:
    load = {PROGRAM: 'model = torch.export.load("model.pt2").module()',
            SCRIPT: 'model = torch.jit.load("model.ts")'}.get(program)
    lines = [f"# {about['study']} — arm {about['arm']} (seed {about['seed']}, test accuracy "
             f"{100 * about['test_accuracy']:.2f}%)", "", f"{about['architecture']}; MLflow run {about['run_id']}.",
             f"Input: {about['input']}.", f"Output: {about['output']}.", ""]
    if load:
        lines += ["With torch alone:", "", "```python", "import torch", load,
                  "scores = model(images)  # images: a torch tensor as described above", "```", ""]
    lines += ["With ablate (the network class itself, e.g. to fine-tune):", "", "```python", "import json, torch",
              "from ablate.export import rebuild", 'about = json.load(open("ablate.json"))',
              'model = rebuild(about, torch.load("state_dict.pt"))', "```", ""]
    return "\n".join(lines)


def _register(uri: str, study: str, arm: str, run_id: str) -> str:
    import mlflow

    name = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{study}-{arm}").strip("-")
    mlflow.set_tracking_uri(uri)
    version = mlflow.register_model(f"runs:/{run_id}/{MODEL_ARTIFACT}", name)
    return f"{name} version {version.version}"
