"""A user's factory whose network torch.export cannot trace (Python control flow on the data): ablate must save it
as a state dict and its settings, never as a pickle (tests/export/test_store_safety.py)."""

from torch import nn


class Branchy(nn.Module):
    def __init__(self, width: int = 8):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, width), nn.ReLU(), nn.Linear(width, 10))

    def forward(self, images):
        scores = self.body(images)
        if scores.is_meta or scores.abs().sum() > 0:  # a data-dependent branch (meta: ablate sizes it on no data)
            return scores
        return -scores


def branchy(width: int = 8) -> nn.Module:
    return Branchy(width)
