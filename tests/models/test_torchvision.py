"""kind = "torchvision": torchvision's classification networks, randomly initialised, fitted to the dataset's
channels and classes, sized on the meta device, refused in one line where they cannot train on the data."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torchvision

from ablate import datasets, models
from ablate.design import expand, pack_key
from ablate.models import TorchvisionModel, build_model, count_params, initialise
from ablate.spec import DataSettings, parse_study
from tests._helpers import spec_error_at
from tests.conftest import DATA_DIR

MNIST, CIFAR = datasets.get("mnist"), datasets.get("cifar10")
IMAGENET_SHAPED = replace(CIFAR, shape=(3, 224, 224), class_names=tuple(f"c{i}" for i in range(1000)))


def _study(model: str, dataset: str = "mnist") -> str:
    return f'[study]\nname = "tv"\ndataset = "{dataset}"\n\n[model]\nkind = "torchvision"\n{model}\n\n' \
           '[[stage]]\nname = "a"\n'


@pytest.mark.parametrize(("name", "weights"), [("resnet18", "ResNet18_Weights"),
                                               ("mobilenet_v3_small", "MobileNet_V3_Small_Weights"),
                                               ("squeezenet1_0", "SqueezeNet1_0_Weights"),
                                               ("regnet_x_400mf", "RegNet_X_400MF_Weights")])  # built on the CPU
def test_at_imagenet_shape_the_sizes_are_torchvisions_own(name, weights):
    """Parameters and MACs as torchvision's model cards give them (its weights' metadata: nothing downloaded),
    counted from the spec on the meta device, and the built network has that many parameters."""
    spec = TorchvisionModel(name=name)
    meta = getattr(torchvision.models, weights).IMAGENET1K_V1.meta
    assert models.params_count(spec, IMAGENET_SHAPED) == meta["num_params"]
    assert round(models.macs(spec, IMAGENET_SHAPED) / 1e9, 3) == pytest.approx(meta["_ops"], abs=1e-3)
    assert count_params(build_model(spec, IMAGENET_SHAPED)) == meta["num_params"]


def test_resnet18_has_its_published_11_689_512_parameters():
    assert models.params_count(TorchvisionModel(name="resnet18"), IMAGENET_SHAPED) == 11_689_512


def test_the_first_conv_takes_the_datasets_channels_and_the_head_its_classes():
    net = build_model(TorchvisionModel(name="resnet18"), MNIST)
    assert (net.conv1.in_channels, net.conv1.out_channels, net.conv1.kernel_size, net.conv1.stride,
            net.conv1.padding, net.conv1.bias) == (1, 64, (7, 7), (2, 2), (3, 3), None)
    assert net.fc.out_features == 10
    # 3-channel images keep torchvision's own first conv: the network is exactly torchvision's
    assert count_params(build_model(TorchvisionModel(name="resnet18"), CIFAR)) == \
        count_params(torchvision.models.resnet18(num_classes=10))


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
@pytest.mark.parametrize("dataset", [MNIST, CIFAR], ids=["mnist", "cifar10"])
def test_a_torchvision_network_trains_a_step_on_small_images(name, dataset):
    torch.manual_seed(0)
    spec = TorchvisionModel(name=name)
    net = build_model(spec, dataset)
    initialise(net, "default")
    assert count_params(net) == models.params_count(spec, dataset)
    images, labels = torch.randn(8, *dataset.shape), torch.randint(0, dataset.classes, (8,))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    first = next(p for p in net.parameters())
    before = first.detach().clone()
    scores = net(images)
    assert scores.shape == (8, dataset.classes)
    loss = torch.nn.functional.cross_entropy(scores, labels)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and not torch.equal(first, before)


def test_builder_arguments_pass_through_and_the_trial_describes_them():
    trial = expand(parse_study(_study('name = "efficientnet_b0"\ndropout = 0.35', "cifar10")))[0]
    assert trial.settings.model.kwargs == {"dropout": 0.35}
    assert trial.architecture == "torchvision efficientnet_b0(dropout=0.35)"
    assert build_model(trial.settings.model, CIFAR).classifier[0].p == 0.35


def test_torchvision_trials_never_pack():
    trial = expand(parse_study(_study('name = "resnet18"')))[0]
    assert models.pack_blank(trial.settings.model) is None and pack_key(trial.settings) is None


@pytest.mark.parametrize(
    ("model", "dataset", "path", "needles"),
    [
        ('name = "fasterrcnn_resnet50_fpn"', "mnist", "stage[1].model.name",
         ["an object detection model of torchvision", "ablate trains image classifiers"]),
        ('name = "raft_small"', "mnist", "stage[1].model.name", ["an optical flow model"]),
        ('name = "deeplabv3_resnet50"', "mnist", "stage[1].model.name", ["a semantic segmentation model"]),
        ('name = "resnet19"', "mnist", "stage[1].model.name", ["no classification model 'resnet19'",
                                                      "did you mean 'resnet18'?"]),
        ('name = "inception_v3"', "mnist", "stage[1].model.name", ["inception_v3 needs images of at least 75×75",
                                                          "the dataset's are 28×28"]),
        ('name = "alexnet"', "cifar10", "stage[1].model.name", ["alexnet needs images of at least 63×63"]),
        ('name = "vit_b_16"', "cifar10", "stage[1].model.name",
         ["does not take 32×32 images (its argument image_size sets the size it takes)", "Expected 224"]),
        ('name = "efficientnet_b0"\ndropot = 0.2', "cifar10", "stage[1].model.kwargs",
         ["takes no argument 'dropot' (did you mean 'dropout'?)", "torchvision.models.EfficientNet"]),
        ('name = "resnet18"\nnum_classes = 5', "mnist", "stage[1].model.kwargs", ["'num_classes' is set by ablate"]),
        ('name = "resnet18"\nweights = "DEFAULT"', "mnist", "stage[1].model.kwargs", ["randomly initialised"]),
        ('name = "vit_b_16"\nnum_layers = 2', "cifar10", "stage[1].model.kwargs", ["sets 'num_layers' itself"]),
        ('name = "googlenet"\naux_logits = true', "mnist", "stage[1].model.kwargs", ["turn its auxiliary outputs off"]),
    ],
)
def test_what_cannot_train_on_the_data_is_refused_in_one_line(model, dataset, path, needles):
    error = spec_error_at(_study(model, dataset), path, *needles, expand=True)
    assert "\n" not in str(error)


def test_a_network_that_takes_the_size_once_told_fits():
    """vit_b_16 refuses 32×32 until its image_size says so; googlenet's auxiliary heads are off by default."""
    assert expand(parse_study(_study('name = "vit_b_16"\nimage_size = 32', "cifar10")))[0].params_count > 8e7
    assert build_model(TorchvisionModel(name="googlenet"), MNIST).train()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


RESNET_STUDY = """
[study]
name = "tv"
seeds = [0]

[data]
val_size = 100
train_limit = 300
test_limit = 100

[train]
epochs = 1
batch_size = 64

[[stage]]
name = "resnet18"
model = { kind = "torchvision", name = "resnet18" }
"""


@pytest.mark.slow
def test_a_resnet18_study_runs_and_exports(write_study, store, tmp_path, capsys):
    """`ablate run` trains torchvision's resnet18 on MNIST (one channel, 28×28) for an epoch; `ablate export` writes
    it as a torch.export program and an ONNX file that give the run's logged test predictions."""
    import mlflow
    import numpy as np
    import onnxruntime
    from mlflow import MlflowClient

    from ablate.cli import main

    assert main(["run", str(write_study(RESNET_STUDY)), "--tracking-uri", store]) == 0
    client = MlflowClient(store)
    run = client.search_runs([client.get_experiment_by_name("tv").experiment_id], "tags.role = 'trial'")[0]
    assert run.data.metrics["params_count"] == 11_175_370 and run.data.metrics["test_accuracy"] > 0
    capsys.readouterr()
    out = tmp_path / "exported"
    assert main(["export", "--study", "tv", "--out", str(out), "--format", "pt2,onnx", "--tracking-uri", store]) == 0
    assert "checked with onnxruntime on 100 mnist test images" in capsys.readouterr().out
    logged = np.load(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="test_outputs.npz",
                                                         tracking_uri=store))["predictions"]
    data = DataSettings(val_size=100, train_limit=300, test_limit=100)  # the study's
    images = datasets.load("mnist", data, DATA_DIR, torch.device("cpu")).test.images
    program = torch.export.load(str(out / "resnet18" / "model.pt2")).module()
    with torch.inference_mode():
        assert (program(images).argmax(1).numpy() == logged).all()
    session = onnxruntime.InferenceSession(str(out / "resnet18" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert (session.run(["scores"], {"images": images.numpy()})[0].argmax(1) == logged).all()
