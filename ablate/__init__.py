"""ablate: declarative ablation studies of neural networks, run in parallel, logged to MLflow."""

__version__ = "0.1.0"
