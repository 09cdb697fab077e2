"""A run's saved model read back from the store without running anything the store holds.

A store anyone may write to must not be able to run code on the machines that export or report
from it. So ablate rebuilds the network from `ablate.json` (the resolved settings, plain JSON) and
`state_dict.pt` (read with torch.load(weights_only=True): tensors, nothing else), and checks it
against `probe.pt` (the scores the model gave a few fixed images when it was saved). It never
calls mlflow.pytorch.load_model (which unpickles `data/model.pth` wherever one lies), nor
torch.export.load (which unpickles parts of a .pt2 archive): a model saved by an earlier ablate,
whose only weights are inside its torch.export program, has them read from the archive as raw
bytes and JSON. A model that exists only as a pickle is refused unless the user passes
--trust-pickles. A factory that the settings name (a custom model's, a dataset's) is called only
when it is the researcher's own code (ablate.models' foreign_code), or with --trust-pickles.
"""

from __future__ import annotations

import io
import json
import re
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ablate import datasets, models
from ablate._shell import command
from ablate.engine import Classifier
from ablate.errors import AblateError, StoreError
from ablate.models._custom import foreign_code
from ablate.spec import model_from_dict
from ablate.tracking import MODEL_ARTIFACT, MODEL_SETTINGS, Tracker
from ablate.tracking._models import MODEL_PROBE, MODEL_STATE, probe_images

# What earlier versions of ablate kept instead of state_dict.pt: MLflow's pytorch flavour, as a torch.export program
# or (a network that does not export) a pickle.
LEGACY_PROGRAM, LEGACY_PICKLE = "data/model.pt2", "data/model.pth"


_DATASET_FACTORY = re.compile(r"factory:([A-Za-z_][\w.]*:[A-Za-z_]\w*)")



def trust_advice() -> str:
    return (f"if you trust everyone who can write to this store, `{command('ablate')} export --trust-pickles` loads "
            "it; otherwise train the arm again into a new store (--tracking-uri)")


def rebuild(about: dict[str, Any], state: dict[str, torch.Tensor]) -> Classifier:
    """The saved network from its ablate.json and state dict, with ablate: the network `ablate run` built for those
    settings, behind the normalisation it was trained with (raw images in, class scores out), in eval mode. A custom
    model's factory is called again with its settings."""
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


def load_saved(tracker: Tracker, run_id: str, trust_pickles: bool = False
               ) -> tuple[Classifier, dict[str, Any], torch.Tensor]:
    """A run's saved model rebuilt as ablate's network (its layers, to look inside or fine-tune), its ablate.json,
    and the probe images it was checked on. Raises StoreError (one line naming the run and arm, and what to do) for
    a model it will not or cannot load."""
    held = tracker.run_files(run_id)
    files = _model_files(held, run_id)
    with tempfile.TemporaryDirectory() as scratch:
        def fetch(name: str) -> Path:
            return Path(held.download_artifacts(f"{MODEL_ARTIFACT}/{name}", scratch))

        if MODEL_SETTINGS not in files:
            raise StoreError(f"run {run_id}: its saved model has no {MODEL_SETTINGS}, so ablate cannot rebuild it; "
                             "it was not saved by ablate (or was damaged since)")
        about = _settings(fetch(MODEL_SETTINGS), run_id)
        where = f"run {run_id} (arm {' '.join(str(about.get('arm', '?')).split())})"  # one line, whatever it holds
        if MODEL_STATE in files:
            state = _tensors(fetch(MODEL_STATE), where)
            probe = _tensors(fetch(MODEL_PROBE), where) if MODEL_PROBE in files else None
            return _rebuilt(about, state, probe, where, trust_pickles)
        if LEGACY_PROGRAM in files:
            state = _program_weights(fetch(LEGACY_PROGRAM), where)
            if state is not None:
                return _rebuilt(about, state, None, where, trust_pickles)
        if not trust_pickles:
            raise StoreError(_refusal(files, where))
        return _trusted(Path(held.download_artifacts(MODEL_ARTIFACT, scratch)), about, where)


def _model_files(held: Any, run_id: str) -> set[str]:
    """The paths under the run's model folder (`held`: the run's own artifacts, Tracker.run_files), relative to it
    (two levels: MLflow's data/ included, where a model saved before ablate logged models keeps its MLflow model)."""
    found: set[str] = set()
    try:
        for entry in held.list_artifacts(MODEL_ARTIFACT):
            name = entry.path.removeprefix(f"{MODEL_ARTIFACT}/")
            found.add(name)
            if entry.is_dir:
                found |= {inner.path.removeprefix(f"{MODEL_ARTIFACT}/") for inner in held.list_artifacts(entry.path)}
    except Exception as exc:  # noqa: BLE001 — the artifact store unreadable: said as the store's, with the run
        raise StoreError(f"run {run_id}: cannot list its saved model ({type(exc).__name__}: {exc})") from exc
    return found


def _refusal(files: set[str], where: str) -> str:
    if LEGACY_PICKLE in files:
        return (f"{where}: its model exists only as a pickle ({MODEL_ARTIFACT}/{LEGACY_PICKLE}; ablate saved networks "
                "that do not torch.export so before it kept state dicts), which runs any code it names when loaded, "
                f"so ablate does not load it; {trust_advice()}")
    if LEGACY_PROGRAM in files:
        return (f"{where}: its torch.export program ({MODEL_ARTIFACT}/{LEGACY_PROGRAM}) holds its weights in a layout "
                f"ablate cannot read without unpickling it; {trust_advice()}")
    return (f"{where}: its '{MODEL_ARTIFACT}' artifacts hold no weights ablate can read ({MODEL_STATE} is missing); "
            "train the arm again into a new store (--tracking-uri)")


def _settings(path: Path, run_id: str) -> dict[str, Any]:
    try:
        about = json.loads(path.read_text())
    except ValueError:  # UnicodeDecodeError included
        about = None
    settings = about.get("settings") if isinstance(about, dict) else None
    if not isinstance(settings, dict) or not {"model", "dataset"} <= settings.keys():  # what rebuilding needs
        raise StoreError(f"run {run_id}: its {MODEL_SETTINGS} is not what ablate writes (no settings with a model "
                         "and a dataset); it was damaged or written by someone else")
    return about


def _tensors(path: Path, where: str) -> Any:
    """A torch file that may hold tensors (in dicts and lists) and nothing else: torch refuses, without running it,
    any other object a planted file names."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 — a pickle naming code, or a damaged file: neither is loaded
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreError(f"{where}: {MODEL_ARTIFACT}/{path.name} is not plain tensors, so ablate does not load it "
                         f"({first}); it was damaged or written by someone else") from exc


def _rebuilt(about: dict[str, Any], state: Any, probe: Any, where: str, trust_pickles: bool
             ) -> tuple[Classifier, dict[str, Any], torch.Tensor]:
    """The network rebuilt from settings and weights; its scores on the probe images checked against those the
    model gave when it was saved (a model saved before ablate kept them: its weights are the program's own)."""
    _check_factories(about["settings"], where, trust_pickles)
    if not isinstance(state, dict):
        raise StoreError(f"{where}: {MODEL_ARTIFACT}/{MODEL_STATE} is not a state dict")
    try:
        model = rebuild(about, {_network_key(key): value for key, value in state.items()})
    except Exception as exc:  # noqa: BLE001 — settings or weights that do not fit, or a factory that fails: one line
        raise StoreError(f"{where}: cannot rebuild its network from its settings and weights "
                         f"({type(exc).__name__}: {exc})") from exc
    shape = datasets.get(about["settings"]["dataset"]).shape
    if probe is None:
        return model, about, probe_images(shape, floats="float32" in str(about.get("input")))
    images, scores = (probe.get(key) if isinstance(probe, dict) else None for key in ("images", "scores"))
    with torch.inference_mode():
        same = (isinstance(images, torch.Tensor) and tuple(images.shape[1:]) == tuple(shape)
                and _close(model(images), scores))
    if not same:
        raise StoreError(f"{where}: the network rebuilt from its settings and weights does not give the scores the "
                         "saved model gave (probe.pt); the store's files do not belong together")
    return model, about, images


def _network_key(key: str) -> str:
    """A weight's name in the network, from its name in a saved program: the Classifier's `net.…`, or the MLflow
    model's (ablate.engine's Served) `classifier.net.…`."""
    return key.removeprefix("classifier.").removeprefix("net.")


def _close(scores: torch.Tensor, saved: Any) -> bool:
    """Equal up to float rounding: the saved scores may come from another CPU, whose kernels round otherwise."""
    return (isinstance(saved, torch.Tensor) and saved.shape == scores.shape
            and torch.allclose(scores, saved.float(), rtol=1e-4, atol=1e-4))


def _check_factories(settings: dict[str, Any], where: str, trust_pickles: bool) -> None:
    """Refuses to call a factory that the store names unless it is the researcher's own code (or trusted)."""
    if trust_pickles:
        return
    named = []
    if isinstance(settings.get("model"), dict) and settings["model"].get("kind") == "custom":
        named.append(("model factory", str(settings["model"].get("factory", ""))))
    dataset = _DATASET_FACTORY.match(str(settings.get("dataset", "")))
    if dataset:
        named.append(("dataset factory", dataset.group(1)))
    for what, reference in named:
        reason = foreign_code(reference)
        if reason is not None:
            raise StoreError(f"{where}: its settings name the {what} {reference} ({reason}); ablate calls a "
                             "factory named by the store only when it is your own code (a module outside Python's and "
                             "installed packages' folders, e.g. beside the study); if you trust everyone who can "
                             f"write to this store, `{command('ablate')} export --trust-pickles` calls it")


def _program_weights(path: Path, where: str) -> dict[str, torch.Tensor] | None:
    """The weights inside a torch.export archive (as ablate saved models before it kept state_dict.pt), read without
    torch.export.load: each tensor from its raw bytes and the layout the archive's JSON gives, a pickled one with
    torch.load(weights_only=True). None when the archive is not in the layout this reads."""
    from torch._export.serde.schema import ScalarType
    from torch._export.serde.serialize import deserialize_scalar_type

    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            config_name = next(n for n in names if n.endswith("data/weights/model_weights_config.json"))
            order = next((n for n in names if n.endswith("/byteorder")), None)
            if order is not None and archive.read(order).decode().strip() != sys.byteorder:
                return None
            folder = config_name.rsplit("/", 1)[0]
            config = json.loads(archive.read(config_name))["config"]
            return {fqn: _weight(lambda name: archive.read(f"{folder}/{name}"), entry, deserialize_scalar_type,
                                 ScalarType, where)
                    for fqn, entry in config.items()}
    except StoreError:
        raise
    except Exception:  # noqa: BLE001 — another torch's layout (or not an archive): not read here
        return None


def _weight(read: Callable[[str], bytes], entry: dict, to_dtype: Callable, scalar_type: type, where: str
            ) -> torch.Tensor:
    """One tensor of a torch.export archive's weights, from its bytes and the layout its JSON entry gives."""
    data = read(entry["path_name"])
    if entry["use_pickle"]:
        return _tensors_from_bytes(data, where)
    meta = entry["tensor_meta"]
    dtype = to_dtype(scalar_type(meta["dtype"]))
    sizes, strides = ([int(d["as_int"]) for d in meta[key]] for key in ("sizes", "strides"))
    if not data:  # an all-zero tensor is stored as an empty record
        return torch.zeros(sizes, dtype=dtype)
    flat = torch.frombuffer(bytearray(data), dtype=dtype)
    return torch.as_strided(flat, sizes, strides, int(meta["storage_offset"]["as_int"])).clone()


def _tensors_from_bytes(data: bytes, where: str) -> torch.Tensor:
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 — a pickle naming code: not loaded
        raise StoreError(f"{where}: a weight in {MODEL_ARTIFACT}/{LEGACY_PROGRAM} is not a plain tensor, so ablate "
                         f"does not load it; {trust_advice()}") from exc


def _trusted(local: Path, about: dict[str, Any], where: str) -> tuple[Classifier, dict[str, Any], torch.Tensor]:
    """--trust-pickles: the model as MLflow loads it (unpickled: it may run code), rebuilt and checked against it."""
    import mlflow.pytorch

    try:
        saved = mlflow.pytorch.load_model(str(local))
    except Exception as exc:  # noqa: BLE001 — whatever the pickle held, said in one line
        raise StoreError(f"{where}: MLflow could not load its model ({type(exc).__name__}: {exc})") from exc
    state = {key: value for key, value in saved.state_dict().items()
             if key.removeprefix("classifier.").startswith("net.")}
    served = any(key.startswith("classifier.") for key in state)  # the MLflow model takes float32 pixel values
    model, about, probe = _rebuilt(about, state, None, where, trust_pickles=True)
    with torch.inference_mode():
        if not torch.equal(model(probe), saved(probe.float() if served else probe)):
            raise StoreError(f"{where}: the network rebuilt from its settings does not give the saved model's scores")
    return model, about, probe
