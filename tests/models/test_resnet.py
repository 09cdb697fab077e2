"""kind = "resnet": sizes from the spec alone against hand counts and torchvision's resnet18, `skip = false` as
exactly the plain network, training on both image shapes, and a study through run, plan, report and export."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from ablate import datasets, models
from ablate.cli import main
from ablate.design import expand
from ablate.models import BasicBlock, ResNetModel, build_model, count_params
from ablate.spec import parse_study
from tests._helpers import spec_error_at
from tests.conftest import hooked_macs

MNIST = datasets.get("mnist")
SMALL = ResNetModel(depth=(1, 2), widths=(4, 8), shortcut="projection")

RESNET18 = """
[study]
name = "r18"
dataset = "imagenet-shaped"

[[stage]]
name = "resnet18"
[stage.model]
kind = "resnet"
depth = [2, 2, 2, 2]
widths = [64, 128, 256, 512]
stem = "imagenet"
shortcut = "projection"
"""


def _count(spec: ResNetModel, data=MNIST) -> tuple[int, int]:
    """(from the spec alone, of the built network)."""
    return models.params_count(spec, data), count_params(build_model(spec.resolved(), data))


def test_a_small_resnets_size_is_its_hand_count():
    # MNIST: 1×28×28, 10 classes; depth [1, 2], widths [4, 8], post-activation, batch norm (2 parameters a channel)
    stem = 4 * 1 * 9 + 2 * 4  # 3×3 conv 1 → 4, no bias; its norm
    stage1 = 2 * (4 * 4 * 9 + 2 * 4)  # one block 4 → 4: two convs, two norms, identity shortcut
    down = (8 * 4 * 9 + 2 * 8) + (8 * 8 * 9 + 2 * 8)  # stage 2's first block 4 → 8, stride 2
    projection = 8 * 4 + 2 * 8  # its 1×1 conv and norm
    stage2 = down + projection + 2 * (8 * 8 * 9 + 2 * 8)  # and a second block 8 → 8
    head = 8 * 10 + 10
    assert _count(SMALL) == (stem + stage1 + stage2 + head,) * 2 == (2566, 2566)
    padded = dataclasses.replace(SMALL, shortcut="pad")  # option A: no parameters in the shortcut
    assert _count(padded) == (2566 - projection,) * 2
    assert _count(dataclasses.replace(SMALL, skip=False)) == (2566 - projection,) * 2  # no shortcut at all
    # pre-activation: the stem has no norm; each block norms its input (4, 4, 8 channels), then its first conv's
    # output; one norm before the pooling
    preact = 4 * 9 + (2 * 4 + 144 + 2 * 4 + 144) + (2 * 4 + 288 + 2 * 8 + 576 + projection) + (2 * 2 * 8 + 2 * 576)
    assert _count(dataclasses.replace(SMALL, preact=True)) == (preact + 2 * 8 + head,) * 2
    # no norm: every conv gets a bias (the shortcut padded, so none there)
    no_norm = (36 + 4) + 2 * (144 + 4) + (288 + 8) + (576 + 8) + 2 * (576 + 8) + head
    assert _count(dataclasses.replace(padded, norm="none")) == (no_norm,) * 2


@pytest.mark.parametrize("spec", [SMALL, ResNetModel(), ResNetModel(preact=True, stem="imagenet", dropout=0.2),
                                  ResNetModel(depth=(1, 1), widths=(4, 8), norm="none", skip=False)])
def test_macs_from_the_spec_match_a_hook_count(spec):
    for data in (MNIST, datasets.get("cifar10")):
        assert models.macs(spec, data) == hooked_macs(build_model(spec.resolved(), data), data.shape)


def test_resnet18_is_torchvisions(swap_dataset, tmp_path, capsys):
    """depth [2, 2, 2, 2], widths [64, ..., 512], the imagenet stem and projections, at 3×224×224 and 1,000 classes:
    torchvision's resnet18, counted by `ablate plan` from the spec alone and in the built network, layer by layer."""
    import torchvision

    imagenet = dataclasses.replace(MNIST, name="imagenet-shaped", shape=(3, 224, 224),
                                   class_names=tuple(f"c{i}" for i in range(1000)))
    swap_dataset(MNIST)  # put back after the test; the new name is taken out below
    datasets.register(imagenet)
    try:
        trial = expand(parse_study(RESNET18))[0]
        study = tmp_path / "r18.toml"
        study.write_text(RESNET18)
        assert main(["plan", str(study)]) == 0
        planned = capsys.readouterr().out
    finally:
        datasets.unregister("imagenet-shaped")
    theirs = torchvision.models.resnet18(weights=None)
    assert trial.params_count == count_params(theirs) == 11_689_512
    assert "11,689,512" in planned
    ours = build_model(trial.settings.model, imagenet)
    assert count_params(ours) == 11_689_512
    assert [p.shape for p in ours.parameters()] == [p.shape for p in theirs.parameters()]  # same layers, same order
    assert hooked_macs(ours, imagenet.shape) == hooked_macs(theirs, imagenet.shape) == models.macs(trial.settings.model,
                                                                                                   imagenet)
    assert trial.architecture == "resnet-18 2×[64,128,256,512] skip (BN, projection, imagenet stem)"


def _blocks_joined(net: nn.Module, images: torch.Tensor) -> list[bool]:
    """For each block, through forward hooks: whether its output differs from its branch of layers alone (norm →
    ReLU, convs, the ReLU after them): i.e. whether it added anything."""
    added = []

    def check(block, inputs, output):
        x = inputs[0]
        alone = block.body(block.pre(x) if block.pre is not None else x)
        alone = block.out_relu(alone) if block.out_relu is not None else alone
        added.append(not torch.equal(output, alone))

    handles = [m.register_forward_hook(check) for m in net.modules() if isinstance(m, BasicBlock)]
    net(images)
    for handle in handles:
        handle.remove()
    return added


@pytest.mark.parametrize("preact", [False, True])
def test_skip_false_removes_exactly_the_identity_paths(preact):
    torch.manual_seed(0)
    residual = dataclasses.replace(SMALL, shortcut="pad", preact=preact).resolved()
    plain = dataclasses.replace(residual, skip=False).resolved()
    with_skip, without = build_model(residual, MNIST).eval(), build_model(plain, MNIST).eval()
    without.load_state_dict(with_skip.state_dict())  # the very same weights: every key fits, none is left over
    assert count_params(with_skip) == count_params(without)
    images = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert _blocks_joined(without, images) == [False] * 3  # each plain block is its layers, nothing added
        assert _blocks_joined(with_skip, images) == [True] * 3
        assert not torch.allclose(with_skip(images), without(images), atol=1e-3)
    # a plain network has no shortcut, so a projection it is given is not built
    projected = build_model(dataclasses.replace(SMALL, skip=False).resolved(), MNIST)
    assert not any(m.kernel_size == (1, 1) for m in projected.modules() if isinstance(m, nn.Conv2d))
    assert all(m.projection is None and m.pad is None for m in projected.modules() if isinstance(m, BasicBlock))


def _trial(model: str):
    text = f'[study]\nname = "x"\n[[stage]]\nname = "a"\nmodel = {{ kind = "resnet", {model} }}\n'
    return expand(parse_study(text))[0]


def test_depth_and_widths_resolve_and_describe():
    short, written = _trial("depth = 3"), _trial("depth = [3, 3, 3], widths = [16, 32, 64]")
    assert short.hash == written.hash  # written out or left to the defaults: one network, one trial
    assert short.settings.model.depth == (3, 3, 3) and short.params_count == 269_434  # ResNet-20 (1 input channel)
    assert short.architecture == "resnet-20 3×[16,32,64] skip (BN, pad)"
    plain = _trial('skip = false, depth = [1, 2], widths = [8, 8], norm = "none"')
    assert plain.architecture == "resnet-8 [1,2]×[8,8] plain (no norm)"
    assert _trial('skip = false, shortcut = "projection"').hash == _trial("skip = false").hash  # no shortcut to choose


@pytest.mark.parametrize(("model", "path", "needle"), [
    ("depth = [2, 2]", "stage[1].model.depth", "depth lists 2 stages but widths 3"),
    ("widths = [16, 8]", "stage[1].model.widths", "cannot narrow a stage"),
    ("depth = [2, 0, 2]", "stage[1].model.depth", "at least 1 block"),
    ("widths = []", "stage[1].model.widths", "must not be empty"),
    ('shortcut = "zero"', "stage[1].model.shortcut", "allowed: 'pad', 'projection'"),
    ("skp = false", "stage[1].model.skp", "did you mean 'skip'"),
])
def test_bad_resnets_are_rejected_at_their_key(model, path, needle):
    text = f'[study]\nname = "x"\n[[stage]]\nname = "a"\nmodel = {{ kind = "resnet", {model} }}\n'
    spec_error_at(text, path, needle, expand=True)


@pytest.mark.parametrize(("dataset", "spec"), [
    ("mnist", ResNetModel(depth=1, widths=(4, 8))),
    ("cifar10", ResNetModel(depth=1, widths=(4, 8), preact=True, shortcut="projection", dropout=0.1)),
    ("cifar10", ResNetModel(depth=(1, 1, 1), widths=(4, 8, 8), stem="imagenet", norm="none")),
])
def test_a_train_step_learns_on_both_image_shapes(dataset, spec):
    """Channels-last, as the CPU trains it: fifteen Adam steps on one fixed batch lower its loss."""
    data = datasets.get(dataset)
    torch.manual_seed(0)
    net = build_model(spec.resolved(), data).to(memory_format=torch.channels_last).train()
    models.initialise(net, "kaiming_normal")
    images = torch.randn(16, *data.shape).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, data.classes, (16,))
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    losses = []
    for _ in range(15):
        loss = nn.functional.cross_entropy(net(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert net(images).shape == (16, data.classes)
    assert all(map(torch.isfinite, map(torch.tensor, losses))) and losses[-1] < 0.8 * losses[0], losses


STUDY = """
[study]
name = "tinyres"
design = "ablation"
seeds = [0, 1]

[data]
val_size = 300
train_limit = 600
test_limit = 300

[train]
epochs = 2
batch_size = 64
optimizer = "adam"
lr = 0.01

[model]
kind = "resnet"
depth = 1
widths = [4, 8]

[[arm]]
name = "plain"
model = { skip = false }

[execution]
pack = 2
max_workers = 1
"""


@pytest.mark.slow
def test_a_resnet_study_plans_runs_packed_reports_and_exports(write_study, store, tmp_path, monkeypatch, capsys):
    """Residual against plain, two seeds each packed as one network: plan shows both; the run logs 4 trials; the
    report draws the best one's filters and its stem's and stages' outputs; export writes a program that gives the
    logged test predictions."""
    from ablate.report import block_labels, block_outputs
    from tests.export.test_saved_models import _ink, _logged_predictions, _scores

    study = write_study(STUDY, "tinyres.toml")
    assert main(["plan", str(study)]) == 0
    planned = capsys.readouterr().out
    assert "settings: model.skip" in planned and "2 packs of 2 trials" in planned
    # both arms (4·9 + 2·4) + 2·(4·4·9 + 2·4) + (8·4·9 + 2·8 + 8·8·9 + 2·8) + (8·10 + 10): pad shortcuts hold nothing
    assert planned.count(" 1,334 ") == 4
    assert main(["run", str(study), "--tracking-uri", store]) == 0
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "report" / "r.md"
    assert main(["report", "--tracking-uri", store, "--out", str(out)]) == 0
    table = out.read_text()
    assert "| plain    | model.skip=false " in table and "1,334" in table
    for name in ("filters", "activations"):
        assert _ink(out.parent / f"r-{name}.png") > 0.05, name
    exported = tmp_path / "exported"
    assert main(["export", "--study", "tinyres", "--out", str(exported), "--tracking-uri", store]) == 0
    data = datasets.load("mnist", datasets.DataSettings(val_size=300, train_limit=600, test_limit=300),
                         datasets.data_folder(), torch.device("cpu"))
    for arm in ("baseline", "plain"):
        about = json.loads((exported / arm / "ablate.json").read_text())
        program = torch.export.load(str(exported / arm / "model.pt2")).module()
        logged = _logged_predictions(about["run_id"], store)
        assert (_scores(program, data.test.images).argmax(1).numpy() == logged).all()
    net = build_model(ResNetModel(depth=1, widths=(4, 8)).resolved(), MNIST)
    assert block_labels(net) == ["stem", "stage 1", "stage 2"]
    assert [tuple(o.shape[1:]) for o in block_outputs(net, torch.zeros(2, 1, 28, 28))] == [(4, 28, 28), (4, 28, 28),
                                                                                          (8, 14, 14)]
