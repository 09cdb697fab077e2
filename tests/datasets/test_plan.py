"""What a plan says of a dataset without reading it — shape, classes, parameter counts, resident size — and a run that
refuses data which would not fit the device, before anything is recorded."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from ablate import datasets, run
from ablate.cli import main
from ablate.errors import AblateError
from tests._helpers import SEARCH_STUDY
from tests.conftest import DATA_DIR, TINY_STUDY

REPO = Path(__file__).resolve().parents[2]


def _plan(study: str, tmp_path: Path) -> dict:
    """`ablate plan --format json` from a folder with no data at all: plan never reads images."""
    done = subprocess.run([sys.executable, "-m", "ablate", "plan", str(REPO / "studies" / study), "--format", "json",
                           "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"],
                          capture_output=True, text=True, cwd=tmp_path, env={"ABLATE_DATA_DIR": str(tmp_path / "empty"),
                                                                              "PATH": "/usr/bin:/bin",
                                                                              "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_fashion_mnist_plan_states_its_shape_and_sizes_without_the_data(tmp_path):
    plan = _plan("fashion-linearity.toml", tmp_path)
    data = plan["dataset"]
    assert (data["name"], data["shape"], data["classes"]) == ("fashion-mnist", [1, 28, 28], 10)
    assert data["resident_bytes_per_worker"] == 70_000 * (784 + 8)  # uint8 pixels and int64 labels of every split
    assert plan["trials"][0]["params_count"] == 7_850
    assert not (tmp_path / "empty").exists()


def test_a_cifar10_plan_counts_parameters_at_three_channels(tmp_path):
    plan = _plan("cifar10-cnn.toml", tmp_path)
    data = plan["dataset"]
    assert (data["name"], data["shape"], data["classes"]) == ("cifar10", [3, 32, 32], 10)
    assert data["resident_bytes_per_worker"] == 60_000 * (3 * 32 * 32 + 8)  # 185 MB
    assert {t["params_count"] for t in plan["trials"]} == {288_298, 289_194}  # without and with batchnorm


def test_a_linear_model_on_cifar10_has_30730_parameters(tmp_path):
    text = (REPO / "studies" / "fashion-linearity.toml").read_text().replace('"fashion-mnist"', '"cifar10"')
    (tmp_path / "s.toml").write_text(text)
    done = subprocess.run([sys.executable, "-m", "ablate", "plan", str(tmp_path / "s.toml")], capture_output=True,
                          text=True, cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert "30,730" in done.stdout  # 3,072 inputs × 10 classes + 10 biases
    assert "data: CIFAR-10, 3×32×32, 10 classes; 185 MB resident per worker" in done.stdout
    assert ("trials use 45,000 train / 5,000 validation / 10,000 test examples (of its 50,000 train / 10,000 test)"
            in done.stdout)


@pytest.fixture
def tiny(write_study):
    return write_study(TINY_STUDY)


LIMITED = """
[study]
name = "limited"
seeds = [0]

[data]
train_limit = 10000
test_limit = 2000

[[stage]]
name = "small"
model = "linear"

[[stage]]
name = "whole"
model = "linear"
data = { train_limit = 30000, test_limit = 10000 }
"""


def test_split_sizes_are_the_validation_split_then_the_limits():
    mnist = datasets.get("mnist")
    assert mnist.split_sizes(datasets.DataSettings()) == (55_000, 5_000, 10_000)
    assert mnist.split_sizes(datasets.DataSettings(val_size=500, train_limit=1000, test_limit=300)) == (1000, 500, 300)
    assert mnist.split_sizes(datasets.DataSettings(train_limit=10**6, test_limit=10**6)) == (55_000, 5_000, 10_000)
    assert mnist.resident_bytes(datasets.DataSettings(val_size=500, train_limit=1000, test_limit=300)) == 1800 * 792


def test_plan_shows_the_examples_trials_use_and_that_the_files_are_present(tiny, capsys):
    """The conftest's ABLATE_DATA_DIR (the committed MNIST) is where plan looks by default, as run does."""
    assert main(["plan", str(tiny), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)["dataset"]
    assert data["used"] == [{"train": 1000, "validation": 500, "test": 500, "arms": ["linear", "mlp"]}]
    assert (data["train_size"], data["test_size"]) == (60_000, 10_000)  # the dataset's own sizes, as before
    assert data["files"] == {"state": "present", "folder": str((DATA_DIR / "MNIST" / "raw").resolve()),
                             "missing": []}
    assert main(["plan", str(tiny)]) == 0
    out = capsys.readouterr().out
    assert "trials use 1,000 train / 500 validation / 500 test examples (of its 60,000 train / 10,000 test)" in out
    assert f"files: present in {(DATA_DIR / 'MNIST' / 'raw').resolve()}" in out


def test_plan_says_a_run_downloads_files_missing_from_data_dir_and_creates_nothing(tiny, tmp_path, capsys):
    empty = tmp_path / "nothing"
    assert main(["plan", str(tiny), "--data-dir", str(empty)]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert (f"files: not in {empty.resolve() / 'MNIST' / 'raw'}: `ablate run` downloads them (it needs the network), "
            "or put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
            "t10k-labels-idx1-ubyte.gz there") in text
    assert not empty.exists()


def test_plan_names_the_files_to_put_where_for_a_dataset_ablate_cannot_download(tiny, tmp_path, capsys,
                                                                                swap_dataset):
    swap_dataset(replace(datasets.get("mnist"), download=None))
    folder = tmp_path / "MNIST" / "raw"
    folder.mkdir(parents=True)
    (folder / "train-images-idx3-ubyte").write_bytes(b"")  # there, extracted: only the other three are named
    assert main(["plan", str(tiny), "--format", "json", "--data-dir", str(tmp_path)]) == 0
    files = json.loads(capsys.readouterr().out)["dataset"]["files"]
    assert files["state"] == "missing"
    assert files["missing"] == ["train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    assert main(["plan", str(tiny), "--data-dir", str(tmp_path)]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert (f"files: missing: put train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz "
            f"in {folder.resolve()} (ablate cannot download them)") in text
    with pytest.raises(AblateError, match="ablate cannot download it. Put its files train-labels-idx1-ubyte.gz, "):
        datasets.ensure_files("mnist", tmp_path)


def test_plan_shows_each_arms_sizes_where_an_arm_sets_its_own_data(write_study, capsys):
    assert main(["plan", str(write_study(LIMITED))]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert ("trials use 10,000 train / 5,000 validation / 2,000 test (small); 30,000 train / 5,000 validation / "
            "10,000 test (whole) examples") in text


def test_a_search_plan_shows_its_base_settings_data(tmp_path, capsys):
    assert "[data]" not in SEARCH_STUDY
    (tmp_path / "s.toml").write_text(SEARCH_STUDY + "\n[data]\ntrain_limit = 20000\n")
    assert main(["plan", str(tmp_path / "s.toml"), "--format", "json",
                 "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"]) == 0
    data = json.loads(capsys.readouterr().out)["dataset"]
    assert data["used"] == [{"train": 20_000, "validation": 5_000, "test": 10_000, "arms": []}]
    assert data["files"]["state"] == "present"


def test_data_that_would_not_fit_is_refused_before_anything_is_recorded(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("ablate.run._slots.free_memory", lambda device: 100_000_000)  # 100 MB free
    slots = run.plan_slots("cpu", 2, None, 0, 2)
    run.check_memory(slots, {"MNIST": 40_000_000})  # 2 × 40 MB fit
    with pytest.raises(AblateError, match=r"would not fit on cpu: 2 worker\(s\) .*MNIST 55 MB.*110 MB in all"):
        run.check_memory(slots, {"MNIST": 55_000_000})
    store = tmp_path / "mlflow.db"
    code = main(["run", str(REPO / "studies" / "linearity.toml"), "--tracking-uri", f"sqlite:///{store}",
                 "--devices", "cpu", "--workers-per-device", "2"])
    assert code == 2 and "would not fit" in capsys.readouterr().err
    assert not store.exists()


def test_the_hosts_free_memory_is_read_for_cpu_workers():
    from ablate.run import free_memory

    free = free_memory("cpu")
    assert free is None or 0 < free < 1 << 50  # bytes, where the system says (Linux does)


def test_a_gpus_free_memory_comes_from_nvml_and_else_from_cuda(monkeypatch):
    """No GPU here: torch's calls are stood in for, to check which is asked (NVML leaves no CUDA context behind)."""
    import torch

    from ablate.run import free_memory

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: type("P", (), {"total_memory": 80})())
    monkeypatch.setattr(torch.cuda, "device_memory_used", lambda device: 30)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: pytest.fail("a CUDA context was opened"))
    assert free_memory("cuda:1") == 50

    def no_pynvml(device):
        raise ModuleNotFoundError("nvidia-ml-py does not seem to be installed")

    monkeypatch.setattr(torch.cuda, "device_memory_used", no_pynvml)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (42, 80))
    assert free_memory("cuda:0") == 42
