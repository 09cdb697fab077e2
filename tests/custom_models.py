"""An example of a user's model factory for `model = { kind = "custom", factory = "tests.custom_models:tiny_net" }`."""

from torch import nn


def tiny_net(width: int = 16, depth: int = 1) -> nn.Module:
    """A small MLP: every key of the study's model table besides kind and factory arrives as a keyword argument."""
    layers: list[nn.Module] = [nn.Flatten()]
    inputs = 28 * 28
    for _ in range(depth):
        layers += [nn.Linear(inputs, width), nn.ReLU()]
        inputs = width
    layers.append(nn.Linear(inputs, 10))
    return nn.Sequential(*layers)


def not_a_module(**_: object) -> str:
    return "oops"


def wrong_output() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 3))
