"""The torch side shared by the built-in kinds: activations, initialisation, parameter counts."""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}

INITS = {
    "xavier_uniform": nn.init.xavier_uniform_,
    "xavier_normal": nn.init.xavier_normal_,
    "kaiming_uniform": lambda w: nn.init.kaiming_uniform_(w, nonlinearity="relu"),
    "kaiming_normal": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
    "orthogonal": nn.init.orthogonal_,
}


class Dropout(nn.Dropout):
    """nn.Dropout whose mask follows its input's logical (N, C, H, W) order whatever the memory layout, so that a
    channels-last network on the CPU draws exactly the masks its contiguous twin draws (torch fills a CPU mask in
    memory order). Contiguous inputs, and every GPU input, take nn.Dropout's own path; the explicit one is what
    torch's CPU dropout computes: a Bernoulli(1 - p) mask, divided by 1 - p, times the input."""

    def forward(self, x):
        if not self.training or self.p == 0 or x.device.type != "cpu" or x.is_contiguous():
            return super().forward(x)
        noise = torch.empty(x.shape, dtype=x.dtype, device=x.device).bernoulli_(1 - self.p)
        noise.div_(1 - self.p)
        return x * noise


def activation(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


def initialise(model: nn.Module, scheme: str) -> None:
    """Re-initialise every linear and conv weight with the scheme, biases to zero; 'default' keeps PyTorch's."""
    if scheme == "default":
        return
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            INITS[scheme](module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
