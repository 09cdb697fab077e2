"""Check: sanity checks of a study's pipeline, per architecture, before its trials are trusted.

Owns the checks `ablate check STUDY.toml` runs for each architecture (distinct model settings)
of a study, on the study's own data, loss, optimiser and augmentation: the initial loss of a
cross-entropy model is near ln(classes); the model fits 128 training examples; trained briefly
on the real labels it beats chance clearly, and on shuffled labels it does not. A pipeline
that is broken — labels misaligned with images, an augmentation that destroys the signal, a
dead model or optimiser — fails at least one of them.

May import: ablate.spec, ablate.datasets, ablate.models, ablate.engine (torch, on first use).
Recording the results is the caller's (the CLI logs them to MLflow).
"""

from ablate.check._sanity import Check, StageChecks, check_study

__all__ = ["Check", "StageChecks", "check_study"]
