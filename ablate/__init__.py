"""ablate: declarative ablation studies of neural networks, run in parallel, logged to MLflow."""

from ablate import _startup

_startup.install_for_command()  # first: a Ctrl-C while the command starts is one line and exit 130 (see there)

__version__ = "0.1.0"
