"""ablate.run's prepare: the store, the slots and the data decided once, before anything is created."""

from __future__ import annotations

from pathlib import Path

import pytest

from ablate.cli import main
from ablate.errors import AblateError
from ablate.run import InlineBackend, load, prepare, run_study
from ablate.tracking import TRACKING_URI_ENV, default_uri, store_uri
from tests._helpers import QuietReporter
from tests.conftest import DATA_DIR, TINY_STUDY


def test_the_store_is_the_flag_then_mlflows_variable_then_the_default(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(TRACKING_URI_ENV, raising=False)
    assert store_uri(None) == default_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv(TRACKING_URI_ENV, "sqlite:////elsewhere/m.db")
    assert store_uri(None) == "sqlite:////elsewhere/m.db"
    assert store_uri("sqlite:////flag/m.db") == "sqlite:////flag/m.db"
    monkeypatch.setenv(TRACKING_URI_ENV, "")
    assert store_uri("") == default_uri()


def test_plan_and_run_use_mlflows_variable(write_study, new_store, monkeypatch, tmp_path, capsys):
    store = new_store()
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.setenv(TRACKING_URI_ENV, store)
    path = write_study(TINY_STUDY)
    prepared = prepare(load(path), data_dir=DATA_DIR, backend=InlineBackend)
    assert prepared.uri == store and prepared.tracker.uri == store
    summary = run_study(prepared, QuietReporter())
    assert len(summary.finished) == len(prepared.trials) and not summary.failed
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{len(prepared.trials)} done" in out and not (here / "mlflow.db").exists()


def test_prepare_checks_everything_before_creating_anything(write_study, tmp_path):
    """A missing data folder is said before the store exists (and no worker starts)."""
    store = tmp_path / "new" / "mlflow.db"
    store.parent.mkdir()
    with pytest.raises(AblateError, match="MNIST"):
        prepare(load(write_study(TINY_STUDY)), tracking_uri=f"sqlite:///{store}", data_dir=tmp_path / "nothing",
                backend=InlineBackend)
    assert not store.exists() and not list(Path(store.parent).iterdir())


def test_a_cpu_run_is_prepared_without_importing_torch_or_mlflow(write_study, tmp_path):
    """The parent of a CPU run needs neither before its store opens (its workers have both, from the worker
    server): importing them would only delay the first trial by seconds."""
    import subprocess
    import sys

    study, store = write_study(TINY_STUDY), f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = (
        "import sys\n"
        "from ablate.run import InlineBackend, load, prepare\n"
        f"prepare(load({str(study)!r}), tracking_uri={store!r}, "
        f"data_dir={str(DATA_DIR)!r}, overrides={{'devices': 'auto'}}, backend=InlineBackend)\n"
        "import ablate.run._slots as slots\n"
        "assert slots.cuda_count('cpu') == 0\n"
        "print(sorted(m for m in ('torch', 'mlflow') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    imported = done.stdout.strip()
    import ablate.run._slots as slots

    if slots.cuda_count() == 0:  # a machine with a GPU asks torch how many it sees: that one import is right
        assert imported == "[]"
    else:
        assert "mlflow" not in imported
