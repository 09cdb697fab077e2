"""The report reads the data and imports the study's factories where `ablate run` did (ablate.report's sources), says
each figure it cannot draw and why, and names its figures after its own file so that no report overwrites another's."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

import matplotlib.image
import pytest
from mlflow.tracking import MlflowClient

from ablate._own_code import foreign_folder
from ablate.cli import main
from ablate.tracking import DATA_DIR, IMPORT_PATHS
from tests.conftest import DATA_DIR as MNIST_FOLDER
from tests.conftest import REPO, TINY_STUDY

# The figures of the tiny study (a linear and an MLP arm on MNIST), by the end of their file names.
FIGURES = ("curves", "test_accuracy", "verdicts",
           "samples", "confusion", "mistakes", "predictions", "per-class", "templates")
# Those that show the data, as the not-drawn list names them.
DATA_FIGURES = ("training images", "confusion matrix", "most confident mistakes", "test predictions",
                "accuracy per class (figure and table)")


def _data_folder(folder: Path) -> Path:
    """A data folder that holds MNIST (a link to the committed files), somewhere other than ./data."""
    folder.mkdir(parents=True)
    (folder / "MNIST").symlink_to(MNIST_FOLDER / "MNIST", target_is_directory=True)
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny study, and a one-stage second study, run from the study's folder with --data-dir naming a data folder
    elsewhere (no $ABLATE_DATA_DIR): the store, the recorded data folder and a folder to report from."""
    root = tmp_path_factory.mktemp("data-sources")
    project = root / "project"
    project.mkdir()
    (project / "tiny.toml").write_text(TINY_STUDY)
    second = TINY_STUDY.replace('name = "tiny"', 'name = "second"').replace("seeds = [0, 1]", "seeds = [0]")
    (project / "second.toml").write_text(second.split('[[stage]]\nname = "mlp"')[0])  # its linear stage alone
    data = _data_folder(root / "elsewhere" / "data")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("ABLATE_DATA_DIR", raising=False)
        patch.chdir(project)
        for study in ("tiny.toml", "second.toml"):
            assert main(["run", study, "--tracking-uri", uri, "--data-dir", str(data)]) == 0
    away = root / "away"
    away.mkdir()
    return uri, data, away


def _report(capsys, uri: str, out: Path, *args: str) -> tuple[str, list[str]]:
    """`ablate report --study tiny --out OUT ARGS`: the markdown and the lines on stderr."""
    capsys.readouterr()
    assert main(["report", "--tracking-uri", uri, "--study", "tiny", "--out", str(out), *args]) == 0
    return out.read_text(), capsys.readouterr().err.splitlines()


def _drawn(folder: Path, prefix: str) -> set[str]:
    return {p.name.removeprefix(f"{prefix}-").removesuffix(".png") for p in folder.glob(f"{prefix}-*.png")}


def _all_drawn(text: str, err: list[str], folder: Path, prefix: str) -> None:
    assert _drawn(folder, prefix) == set(FIGURES), err
    assert not err and "not drawn" not in text
    for figure in FIGURES:
        assert f"]({prefix}-{figure}.png)" in text
        assert matplotlib.image.imread(folder / f"{prefix}-{figure}.png").std() > 0.05, figure


@pytest.mark.slow
def test_each_run_records_its_data_folder_and_import_folders(trained):
    uri, data, _ = trained
    client = MlflowClient(uri)
    for study in ("tiny", "second"):
        parent = client.search_runs([client.get_experiment_by_name(study).experiment_id], "tags.role = 'parent'")[0]
        assert parent.data.tags[DATA_DIR] == str(data.resolve())
        folders = json.loads(parent.data.tags[IMPORT_PATHS])
        assert folders[0] == str(data.parent.parent / "project")  # the study file's folder, then the current one


@pytest.mark.slow
def test_the_report_reads_the_data_folder_the_run_recorded_from_any_folder(trained, capsys, monkeypatch):
    """Before: from a folder without ./data the report wrote 2 of its 8 figures and said nothing."""
    uri, _, away = trained
    monkeypatch.delenv("ABLATE_DATA_DIR", raising=False)
    monkeypatch.chdir(away)
    text, err = _report(capsys, uri, away / "recorded" / "r.md")
    _all_drawn(text, err, away / "recorded", "r")


@pytest.mark.slow
def test_data_dir_wins_over_the_environment_which_wins_over_the_record(trained, capsys, monkeypatch, tmp_path):
    uri, _, away = trained
    monkeypatch.chdir(away)
    empty = tmp_path / "empty"
    empty.mkdir()
    other = _data_folder(tmp_path / "other")
    monkeypatch.setenv("ABLATE_DATA_DIR", str(empty))
    text, err = _report(capsys, uri, tmp_path / "env-empty" / "r.md")  # the environment before the record
    assert [line.split(" not drawn: ")[0] for line in err] == [f"ablate report: tiny: {f}" for f in DATA_FIGURES]
    assert all(f"MNIST is not in {empty.resolve()}/MNIST/raw (the data folder $ABLATE_DATA_DIR names); pass "
               "--data-dir DIR" in line for line in err), err
    _all_drawn(*_report(capsys, uri, tmp_path / "flag" / "r.md", "--data-dir", str(other)), tmp_path / "flag", "r")
    monkeypatch.setenv("ABLATE_DATA_DIR", str(other))
    _all_drawn(*_report(capsys, uri, tmp_path / "env" / "r.md"), tmp_path / "env", "r")
    text, err = _report(capsys, uri, tmp_path / "flag-empty" / "r.md", "--data-dir", str(empty))
    assert len(err) == len(DATA_FIGURES) and all(line.endswith(f"{empty.resolve()}/MNIST/raw (--data-dir)")
                                                 for line in err), err


@pytest.mark.slow
def test_a_data_folder_gone_names_each_figure_not_drawn_and_the_table_is_written(trained, capsys, monkeypatch):
    uri, data, away = trained
    monkeypatch.delenv("ABLATE_DATA_DIR", raising=False)
    monkeypatch.chdir(away)
    (data / "MNIST").rename(data / "moved")
    try:
        text, err = _report(capsys, uri, away / "gone" / "g.md")
    finally:
        (data / "moved").rename(data / "MNIST")
    why = (f"MNIST is not in {data.resolve()}/MNIST/raw (the data folder the study's latest `ablate run` recorded); "
           "pass --data-dir DIR")
    assert err == [f"ablate report: tiny: {figure} not drawn: {why}" for figure in DATA_FIGURES]
    assert f"Figures not drawn:\n\n- {', '.join(DATA_FIGURES)} — {why}\n" in text
    assert "| linear" in text and "| mlp" in text  # the table, as ever
    assert _drawn(away / "gone", "g") == {"curves", "test_accuracy", "verdicts", "templates"}  # templates need no files


@pytest.mark.slow
def test_figures_are_named_after_the_report_so_two_reports_never_overwrite_each_other(trained, capsys, monkeypatch):
    """Before: `report --out results/t.md` wrote results/tiny-*.png, over those another report linked."""
    uri, _, away = trained
    folder = away / "results"
    _report(capsys, uri, folder / "one.md")
    first = {name: (folder / f"one-{name}.png").read_bytes() for name in FIGURES}
    _report(capsys, uri, folder / "two.md")
    assert _drawn(folder, "one") == _drawn(folder, "two") == set(FIGURES)
    assert {name: (folder / f"one-{name}.png").read_bytes() for name in FIGURES} == first
    assert "](two-" not in (folder / "one.md").read_text() and "](one-" not in (folder / "two.md").read_text()
    client = MlflowClient(uri)
    parent = client.search_runs([client.get_experiment_by_name("tiny").experiment_id], "tags.role = 'parent'")[0]
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "figures")}
    assert logged == {f"figures/tiny-{name}.png" for name in FIGURES}  # in MLflow, after the study, as before
    capsys.readouterr()
    assert main(["report", "--tracking-uri", uri, "--out", str(folder / "all.md")]) == 0  # both studies
    assert _drawn(folder, "all-tiny") == set(FIGURES) and _drawn(folder, "all-second") >= {"curves", "templates"}
    assert "](all-second-curves.png)" in (folder / "all.md").read_text()


FACTORY_STUDY = """
[study]
name = "stripes"
dataset = { factory = "MODULE:stripes", n = 120 }
seeds = [0]

[data]
val_size = 20

[train]
epochs = 1
batch_size = 32

[[stage]]
name = "linear"
model = "linear"
"""


def _ablate(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """ablate in a fresh interpreter run from `cwd`: its import path holds only what ablate puts there."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "ABLATE_DATA_DIR": str(cwd / "no-data")}
    return subprocess.run([sys.executable, "-m", "ablate", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_a_dataset_factory_beside_the_study_file_is_found_by_the_report_from_another_folder(tmp_path):
    """Before: the report, run from elsewhere, could not import the factory `ablate run` found beside the study file.
    The folder is imported from only while it is the researcher's own: writable by anyone, it is refused, and said."""
    from tests.datasets.test_factory import FACTORY

    module = f"stripes_{tmp_path.name.replace('-', '_')}"
    project, away = tmp_path / "project", tmp_path / "away"
    project.mkdir()
    away.mkdir()
    (project / f"{module}.py").write_text(FACTORY)
    (project / "stripes.toml").write_text(FACTORY_STUDY.replace("MODULE", module))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = _ablate(tmp_path, "run", str(project / "stripes.toml"), "--tracking-uri", uri)
    assert done.returncode == 0, done.stdout + done.stderr
    report = _ablate(away, "report", "--tracking-uri", uri, "--out", "s.md")
    assert report.returncode == 0 and not report.stderr, report.stderr
    assert _drawn(away, "s") == {"curves", "test_accuracy", "samples", "confusion", "mistakes",  # one arm: no verdict
                                 "predictions", "per-class", "templates"}
    project.chmod(project.stat().st_mode | stat.S_IWOTH)
    try:
        refused = _ablate(away, "report", "--tracking-uri", uri, "--out", "refused.md")
    finally:
        project.chmod(project.stat().st_mode & ~stat.S_IWOTH)
    drawn = _drawn(away, "refused")
    assert refused.returncode == 0 and drawn == {"curves", "test_accuracy"}, refused.stderr
    lines = refused.stderr.splitlines()
    assert len(lines) == 6 and all(f"not imported from, though `ablate run` did: {project} (writable by anyone)"
                                   in line for line in lines), lines


def test_a_folder_a_store_names_is_imported_from_only_when_it_is_your_own(tmp_path):
    assert foreign_folder(str(tmp_path)) is None
    assert foreign_folder("relative/folder") == foreign_folder(str(tmp_path / "gone")) == "not a folder here"
    assert foreign_folder("/") == "a filesystem's root"
    installed = "a folder of Python's, an installed package's or ablate's"
    assert foreign_folder(sysconfig.get_paths()["purelib"]) == foreign_folder(str(REPO / "ablate")) == installed
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    assert foreign_folder(str(shared)) == "writable by anyone"
