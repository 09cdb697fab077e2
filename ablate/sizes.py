"""Model sizes from the spec alone, so `ablate plan` can show them without importing torch.

tests/test_models.py checks these numbers against the torch modules models.py builds.
"""

from __future__ import annotations

from math import prod

from ablate.spec import DatasetInfo, LinearModel, MLPModel, ModelSpec


def params_count(model: ModelSpec, dataset: DatasetInfo) -> int:
    """Trainable parameters of the model ablate builds for this spec."""
    inputs = prod(dataset.shape)
    if isinstance(model, LinearModel):
        return inputs * dataset.classes + dataset.classes
    if isinstance(model, MLPModel):
        widths = (inputs, *model.hidden, dataset.classes)
        weights = sum(a * b + b for a, b in zip(widths, widths[1:]))
        batchnorm = 2 * sum(model.hidden) if model.batchnorm else 0  # gamma and beta per unit
        return weights + batchnorm
    raise TypeError(f"no size rule for {type(model).__name__}")


def describe(model: ModelSpec, dataset: DatasetInfo) -> str:
    """One line a reader of a results table understands: '784 → 256 (BN, ReLU, dropout 0.5) → 10'."""
    inputs = prod(dataset.shape)
    if isinstance(model, LinearModel):
        return f"linear {inputs} → {dataset.classes}"
    if isinstance(model, MLPModel):
        extras = []
        if model.batchnorm:
            extras.append("BN")
        if model.activation != "none":
            extras.append({"relu": "ReLU", "gelu": "GELU", "tanh": "tanh"}[model.activation])
        if model.dropout:
            extras.append(f"dropout {model.dropout:g}")
        hidden = " → ".join(str(h) for h in model.hidden)
        inner = f" ({', '.join(extras)})" if extras else ""
        return f"mlp {inputs} → {hidden}{inner} → {dataset.classes}"
    raise TypeError(f"no description for {type(model).__name__}")
