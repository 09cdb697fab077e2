"""A study's saved models → folders that need no MLflow (see the package docstring)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ablate._shell import command
from ablate.engine import Classifier
from ablate.errors import AblateError
from ablate.export._onnx import OnnxModel, require_onnx, to_onnx
from ablate.export._read import load_saved
from ablate.tracking import (
    MODEL_ARTIFACT,
    MODEL_SETTINGS,
    STAGE_INDEX,
    Tracker,
    logged_models,
    model_runs,
    store_label,
)

PROGRAM, SCRIPT, ONNX, STATE, README = "model.pt2", "model.ts", "model.onnx", "state_dict.pt", "README.md"
# What export writes in an arm's folder: all it replaces.
OWN_FILES = (STATE, MODEL_SETTINGS, PROGRAM, SCRIPT, ONNX, README)
FORMATS = ("pt2", "onnx")  # --format: a torch.export program (TorchScript where the network does not export), ONNX


@dataclass
class Exported:
    arm: str
    run_id: str
    test_accuracy: float
    folder: Path | None = None
    files: list[str] = field(default_factory=list)
    registered: str | None = None  # "name version N"
    model_uri: str | None = None  # the registered version, as MLflow names it: models:/name/N
    checks: list[str] = field(default_factory=list)  # what a written file was checked on (the ONNX file's check)


def export_models(uri: str, study: str, arm: str | None, out: Path | None, register: bool, force: bool = False,
                  trust_pickles: bool = False, formats: tuple[str, ...] = ("pt2",), data_dir: str | None = None
                  ) -> list[Exported]:
    """Each arm's model (or `arm`'s) written under out/<arm>/ (its program in `formats`) and/or registered as
    '<study>-<arm>'. Every arm's folder, and every ONNX file, is checked before any is written (_arm_folders, to_onnx);
    `trust_pickles` lets load_saved unpickle what it would refuse; `data_dir`: where the ONNX check reads the test
    images (--data-dir, else as ablate.datasets' data_folder says)."""
    if out is not None and "onnx" in formats:
        require_onnx()
    tracker = Tracker(uri)
    found = tracker.client.get_experiment_by_name(study)
    if found is None:
        raise AblateError(f"no study '{study}' in {store_label(uri)}; `{command('ablate')} report` lists the studies "
                          "there")
    runs = model_runs(tracker, found.experiment_id)
    if not runs:
        raise AblateError(f"study '{study}' has no saved models in {store_label(uri)}: its trials ran with [tracking] "
                          "models = \"none\" (or before ablate saved models). Finished trials are not trained again, "
                          "so run the study with models = \"best\" into a new store (--tracking-uri)")
    if arm is not None and arm not in runs:
        raise AblateError(f"--arm {arm}: no saved model for that arm of '{study}'; arms with one: "
                          f"{', '.join(sorted(runs))}")
    chosen = sorted(({arm: runs[arm]} if arm is not None else runs).items(),
                    key=lambda item: int(item[1].data.tags.get(STAGE_INDEX, 0)))  # study order
    folders = _arm_folders(out, [name for name, _ in chosen], force) if out is not None else {}
    sources = {name: _check_registrable(tracker, name, run) for name, run in chosen} if register else {}
    # Every model read (and checked) before any is written: one ablate refuses leaves no arm half exported.
    loaded = {name: load_saved(tracker, run.info.run_id, trust_pickles) for name, run in chosen} if out else {}
    onnx = {name: to_onnx(*model, name, data_dir) for name, model in loaded.items()} if "onnx" in formats else {}
    done = []
    for name, run in chosen:
        item = Exported(name, run.info.run_id, run.data.metrics.get("test_accuracy", float("nan")))
        if out is not None:
            item.folder = folders[name]
            item.files = _write(*loaded[name], item.folder, "pt2" in formats, onnx.get(name))
            item.checks = [onnx[name].checked] if name in onnx else []
        if register:
            item.registered, item.model_uri = _register(uri, study, name, sources[name])
        done.append(item)
    return done


def _arm_folders(out: Path, arms: list[str], force: bool) -> dict[str, Path]:
    """out/<arm> for each arm, each refused before anything is written where export would follow a link out of
    --out or replace what it did not write: a link, a file, or (without --force) a folder already holding files.
    With --force, an arm's folder may hold other files (they are kept) but not a link or folder by one of export's
    own file names."""
    if out.exists() and not out.is_dir():
        raise AblateError(f"--out {out}: a file, not a folder; name a folder (it is made if missing)")
    folders: dict[str, Path] = {}
    for arm in arms:
        folder = out / _file_name(arm)
        if folder in folders.values():
            raise AblateError(f"--out {out}: arms '{arm}' and '{_arm_of(folders, folder)}' would both be written to "
                              f"{folder}; export them one at a time (--arm) into different --out folders")
        _check_folder(folder, force)
        folders[arm] = folder
    return folders


def _arm_of(folders: dict[str, Path], folder: Path) -> str:
    return next(arm for arm, taken in folders.items() if taken == folder)


def _check_folder(folder: Path, force: bool) -> None:
    """One arm's folder, as _arm_folders says."""
    if folder.is_symlink():
        raise AblateError(f"{folder} is a symbolic link; ablate export writes only inside --out and follows no link "
                          "out of it: remove the link or choose another --out")
    if folder.exists() and not folder.is_dir():
        raise AblateError(f"{folder} is a file, not a folder; move it away or choose another --out")
    held = sorted(entry.name for entry in folder.iterdir()) if folder.is_dir() else []
    if held and not force:
        shown = ", ".join(held[:5]) + (", …" if len(held) > 5 else "")
        raise AblateError(f"{folder} already holds files ({shown}); add --force to replace the files ablate export "
                          f"writes there ({', '.join(OWN_FILES)}; the others are kept), or choose another --out")
    for name in OWN_FILES:
        path = folder / name
        if path.is_symlink() or (path.exists() and not path.is_file()):
            kind = "a symbolic link" if path.is_symlink() else "a folder"
            raise AblateError(f"{path} is {kind}; ablate export replaces only its own plain files and follows no "
                              "link out of --out: move it away or choose another --out")


def _file_name(arm: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=,-]+", "-", arm).strip("-.") or "arm"


def _write(model: Classifier, about: dict[str, Any], probe: torch.Tensor, folder: Path, pt2: bool,
           onnx: OnnxModel | None) -> list[str]:
    """A saved model, rebuilt and checked (load_saved), as plain files in `folder`: export's own files of an earlier
    export there are replaced (a program it wrote then may not be written now), any other file kept. `pt2`: with its
    torch.export program; `onnx`: with its checked ONNX file."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in OWN_FILES:
        (folder / name).unlink(missing_ok=True)
    torch.save(model.net.state_dict(), folder / STATE)
    (folder / MODEL_SETTINGS).write_text(json.dumps(about, indent=1))
    program = _compiled(model, probe, folder) if pt2 else None
    if onnx is not None:
        (folder / ONNX).write_bytes(onnx.data)
    (folder / README).write_text(_readme(about, program, onnx is not None))
    return sorted(name for name in OWN_FILES if (folder / name).exists())


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


def _readme(about: dict[str, Any], program: str | None, onnx: bool) -> str:
    load = {PROGRAM: 'model = torch.export.load("model.pt2").module()  # it unpickles parts: trusted files only',
            SCRIPT: 'model = torch.jit.load("model.ts")  # a TorchScript program: trusted files only'}.get(program)
    lines = [f"# {about['study']} — arm {about['arm']} (seed {about['seed']}, test accuracy "
             f"{100 * about['test_accuracy']:.2f}%)", "", f"{about['architecture']}; MLflow run {about['run_id']}.",
             f"Input: {about['input']}.", f"Output: {about['output']}.", ""]
    if load:
        lines += ["With torch alone:", "", "```python", "import torch", load,
                  "scores = model(images)  # images: a torch tensor as described above", "```", ""]
    if onnx:
        lines += ["With onnxruntime (any batch size):", "", "```python", "import onnxruntime",
                  'session = onnxruntime.InferenceSession("model.onnx")',
                  'scores = session.run(["scores"], {"images": images})[0]  # images: a numpy array as described above',
                  "```", ""]
    lines += ["With ablate (the network class itself, e.g. to fine-tune):", "", "```python", "import json, torch",
              "from ablate.export import rebuild", 'about = json.load(open("ablate.json"))',
              'model = rebuild(about, torch.load("state_dict.pt", weights_only=True))  # tensors only: safe', "```",
              ""]
    return "\n".join(lines)


def _check_registrable(tracker: Tracker, arm: str, run) -> str:
    """The URI of the arm's MLflow model (`run`: its run): the run's logged model, or (a model saved before ablate
    logged models) the MLflow model in its run's artifacts; refused, before anything is registered, where there is
    neither."""
    run_id = run.info.run_id
    for model in logged_models(tracker, run.info.experiment_id, run_id):
        if model.name == MODEL_ARTIFACT:
            return f"models:/{model.model_id}"
    held = {entry.path.rsplit("/", 1)[-1] for entry in tracker.run_files(run_id).list_artifacts(MODEL_ARTIFACT)}
    if "MLmodel" in held:
        return f"runs:/{run_id}/{MODEL_ARTIFACT}"
    raise AblateError(f"--register: arm {arm} (run {run_id}) has no MLflow model to register: its network does not "
                      "torch.export, so ablate kept its state dict and settings only; export it with --out")


def _register(uri: str, study: str, arm: str, model_uri: str) -> tuple[str, str]:
    """A new version of the registered model '<study>-<arm>', from the arm's MLflow model (`model_uri`: the registry
    only records where it lies, and which logged model it is: nothing is loaded): 'name version N' and its URI."""
    import mlflow

    name = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{study}-{arm}").strip("-")
    mlflow.set_tracking_uri(uri)
    version = mlflow.register_model(model_uri, name)
    return f"{name} version {version.version}", f"models:/{name}/{version.version}"
