"""`ablate export --format onnx`: an ONNX file whose scores are torch's within 1e-5 at any batch size, written only
after onnxruntime shows it; refused, writing nothing, where they differ or the packages are missing."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from ablate import datasets
from ablate.cli import main
from ablate.cli._parser import ONNX_OPSET as SAID_OPSET
from ablate.engine import Classifier, deployable, train_trial
from ablate.errors import AblateError
from ablate.export import ONNX_OPSET, ONNX_TOLERANCE, rebuild
from ablate.export._onnx import to_onnx
from ablate.models import TorchvisionModel, build_model
from ablate.spec import CNNModel, ConvBlock, DataSettings, LinearModel, MLPModel, TrainSettings, TrialSettings
from ablate.tracking._models import probe_images
from tests.conftest import DATA_DIR

CPU = torch.device("cpu")
DATA = DataSettings(val_size=200, train_limit=500, test_limit=100)


@pytest.fixture(scope="module")
def data():
    torch.set_num_threads(1)
    return datasets.load("mnist", DATA, DATA_DIR, CPU)


def _test_images(count: int = 100) -> np.ndarray:
    return datasets.read_arrays("mnist", DATA_DIR, download=False)["test_images"][:count]


def _onnx_scores(session: onnxruntime.InferenceSession, images: np.ndarray) -> np.ndarray:
    return session.run(["scores"], {"images": images})[0]


def _torch_scores(model, images: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(images.copy())).numpy()


CNN = CNNModel(blocks=(ConvBlock(out=4, pool=True), ConvBlock(out=8, pool=True))).resolved()


@pytest.mark.parametrize("model", [LinearModel(), MLPModel(hidden=(32,)), CNN, TorchvisionModel(name="resnet18")],
                         ids=["linear", "mlp", "cnn", "resnet18"])
def test_a_trained_model_of_each_kind_gives_torchs_scores_through_onnx(model, data):
    """Trained for an epoch, exported and checked (to_onnx), then run here with onnxruntime on 100 MNIST test images
    in a batch of 1 and a batch of 100 through the same file: within 1e-5 of torch's scores."""
    settings = TrialSettings("mnist", 0, DATA, model, TrainSettings(epochs=1, batch_size=64))
    trained = deployable(train_trial(settings, data, CPU, test=False).model, data)
    exported = to_onnx(trained, {"settings": {"dataset": "mnist"}}, probe_images((1, 28, 28), False), "arm")
    assert f"opset {ONNX_OPSET}" in exported.checked and "100 mnist test images" in exported.checked
    proto = onnx.load_from_string(exported.data)
    assert proto.opset_import[0].version == ONNX_OPSET
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # the batch axis is a name, not a number
    session = onnxruntime.InferenceSession(exported.data, providers=["CPUExecutionProvider"])
    images = _test_images()
    for batch in (images[:1], images):
        expected = _torch_scores(trained, batch)
        got = _onnx_scores(session, batch)
        assert got.shape == (len(batch), 10)
        assert np.abs(got - expected).max() <= 1e-5
    assert ONNX_TOLERANCE == 1e-5


def test_without_the_datasets_files_the_probe_images_are_checked(tmp_path):
    net = build_model(LinearModel(), datasets.get("mnist"))
    exported = to_onnx(Classifier(net, 33.3, 78.6).eval(), {"settings": {"dataset": "mnist"}},
                       probe_images((1, 28, 28), False), "arm", str(tmp_path))
    assert f"the 3 random probe images it was saved with, as mnist's test images are not in {tmp_path}" in \
        exported.checked and "batches of 1 and 3" in exported.checked


def test_a_network_torch_cannot_export_is_refused_in_one_line(capfd):
    from tests.untraced_models import branchy

    with pytest.raises(AblateError) as info:
        to_onnx(Classifier(branchy(), 33.3, 78.6).eval(), {"settings": {"dataset": "mnist"}},
                probe_images((1, 28, 28), False), "branchy")
    message = str(info.value)
    assert message.startswith("arm branchy: torch cannot export its network to ONNX (") and "\n" not in message
    assert message.endswith("export it with --format pt2") and "\x1b" not in message
    assert "def forward" not in capfd.readouterr().err  # the exporter's dump of the graph it got stays quiet


def test_the_command_line_states_the_opset_the_exporter_writes():
    assert SAID_OPSET == ONNX_OPSET


LINEAR_STUDY = """
[study]
name = "lin"
seeds = [0]

[data]
val_size = 200
train_limit = 500
test_limit = 100

[train]
epochs = 1

[[stage]]
name = "linear"
model = { kind = "linear" }
"""


@pytest.mark.slow
def test_a_mismatch_or_a_missing_package_refuses_and_writes_nothing(write_study, store, tmp_path, capsys,
                                                                     monkeypatch):
    assert main(["run", str(write_study(LINEAR_STUDY)), "--tracking-uri", store]) == 0
    out = tmp_path / "out"
    export = ["export", "--study", "lin", "--out", str(out), "--format", "pt2,onnx", "--tracking-uri", store]
    real_run = onnxruntime.InferenceSession.run

    def off_by_a_little(self, names, feeds, *args, **kwargs):
        return [scores + 1e-3 for scores in real_run(self, names, feeds, *args, **kwargs)]

    with monkeypatch.context() as patch:
        patch.setattr(onnxruntime.InferenceSession, "run", off_by_a_little)
        capsys.readouterr()
        assert main(export) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "arm linear: its ONNX model's scores differ from torch's by up to 0.001" in error
    assert "100 mnist test images" in error and "wrote nothing" in error
    assert not out.exists()

    assert main(["export", "--study", "lin", "--register", "--format", "onnx", "--tracking-uri", store]) == 2
    assert "--format says which files --out holds; add --out DIR" in capsys.readouterr().err

    real_find = importlib.util.find_spec
    with monkeypatch.context() as patch:
        patch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else
                      real_find(name, *a))
        assert main(export) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "needs onnxscript" in error and "pip install 'ablate[onnx]'" in error
    assert not out.exists()

    assert main(export) == 0
    printed = capsys.readouterr().out
    assert f"ONNX opset {ONNX_OPSET}, checked with onnxruntime on 100 mnist test images (batches of 1 and 100)" \
        in printed
    folder = out / "linear"
    assert {p.name for p in folder.iterdir()} == {"README.md", "ablate.json", "model.onnx", "model.pt2",
                                                  "state_dict.pt"}
    assert 'onnxruntime.InferenceSession("model.onnx")' in (folder / "README.md").read_text()
    about = json.loads((folder / "ablate.json").read_text())
    model = rebuild(about, torch.load(folder / "state_dict.pt", weights_only=True))
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    images = _test_images()
    assert np.abs(_onnx_scores(session, images) - _torch_scores(model, images)).max() <= 1e-5
