"""What `ablate plan` says of a study's data: the dataset, the examples its trials use (after the validation split
and the limits), what one worker holds resident, and whether its files are there — from the registry's numbers and
a look at the data folder, never reading a file (a plan stays instant, and never imports torch)."""

from __future__ import annotations

from pathlib import Path

from ablate import datasets
from ablate.design import resident_needs
from ablate.spec import Study, resolve_point


def used_sizes(study: Study, trials: list) -> list[dict]:
    """The training, validation and test examples the trials use — one entry per distinct sizes, with the arms that
    use them (a stage or grid point may set its own [data]); a search's trials are not known yet: its base settings'."""
    dataset = datasets.get(study.info.dataset)
    settings = [(t.settings.data, t.stage) for t in trials] or [(resolve_point(study, ()).data, None)]
    groups: dict[tuple[int, int, int], list[str]] = {}
    for data, arm in settings:
        arms = groups.setdefault(dataset.split_sizes(data), [])
        if arm is not None and arm not in arms:
            arms.append(arm)
    return [{"train": train, "validation": validation, "test": test, "arms": arms}
            for (train, validation, test), arms in groups.items()]


def dataset_info(study: Study, trials: list, data_dir: str | Path | None = None) -> dict:
    """The study's dataset as a plan states it: shape, classes, its own sizes, the sizes its trials use, what one
    worker holds resident, and its files' state in the data folder (`data_dir`: --data-dir, else ablate.datasets'
    default)."""
    data = datasets.get(study.info.dataset)
    files = datasets.data_files(data.name, datasets.data_folder(data_dir))
    return {"name": data.name, "title": data.title, "shape": list(data.shape), "classes": data.classes,
            "train_size": data.train_size, "test_size": data.test_size, "used": used_sizes(study, trials),
            "files": {"state": files.state, "folder": str(files.folder), "missing": list(files.missing)},
            "resident_bytes_per_worker": sum(resident_needs(study, trials).values())}


def dataset_line(info: dict) -> str:
    """Three lines: the dataset ('data: MNIST, 1×28×28, 10 classes; 13 MB resident per worker'), the examples the
    trials use ('trials use 10,000 train / 5,000 validation / 2,000 test examples (of MNIST's 60,000 train / 10,000
    test)') and its files' state."""
    shape = "×".join(map(str, info["shape"]))
    used = [f"{u['train']:,} train / {u['validation']:,} validation / {u['test']:,} test" for u in info["used"]]
    if len(used) > 1:  # which arms use which sizes
        used = [f"{text} ({', '.join(u['arms'])})" for text, u in zip(used, info["used"])]
    return (f"data: {info['title']}, {shape}, {info['classes']} classes; "
            f"{info['resident_bytes_per_worker'] / 1e6:,.0f} MB resident per worker\n"
            f"      trials use {'; '.join(used)} examples (of its {info['train_size']:,} train / "
            f"{info['test_size']:,} test)\n"
            f"      files: {files_text(info)}")


def files_text(info: dict) -> str:
    """Whether the files are there, and if not, what a run does about it or what the user must do."""
    files = info["files"]
    state, folder = files["state"], files["folder"]
    if state == "factory":
        return "none: the factory function makes the data (called when the study was read)"
    if state == "present":
        return f"present in {folder}"
    listed = datasets.get(info["name"]).listed_files(tuple(files["missing"]))
    if state == "download":
        return f"not in {folder}: `ablate run` downloads them (it needs the network), or put {listed} there"
    return f"missing: put {listed} in {folder} (ablate cannot download them)"
