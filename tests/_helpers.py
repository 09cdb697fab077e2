"""What the tests share besides fixtures (those are conftest.py's): study texts, and the check of a bad study file."""

from __future__ import annotations

import pytest

from tests.conftest import REPO

SEARCH_STUDY = (REPO / "studies" / "search.toml").read_text()  # the committed search study, as a user starts from

# A tiny search (the space of every kind of entry: a log range, a range, a choice and a conditional range); `trials`
# is filled in by each use.
TINY_SEARCH = """
[study]
name = "srch"
design = "search"
seeds = [0]

[data]
val_size = 500
train_limit = 2000
test_limit = 500

[model]
kind = "mlp"
hidden = [32]

[train]
epochs = 3
batch_size = 128

[tracking]
models = "none"

[search]
trials = {trials}
startup_trials = 2
warmup_epochs = 0
confirm_top = 2
confirm_seeds = [10, 11]

[search.space]
"train.lr" = {{ low = 1e-6, high = 1.0, log = true }}
"model.dropout" = {{ low = 0.0, high = 0.5 }}
"train.schedule" = ["constant", {{ kind = "step", step_size = 1 }}]
"train.schedule.gamma" = {{ low = 0.1, high = 0.9, when = {{ "train.schedule" = {{ kind = "step", step_size = 1 }} }} }}
"""


def spec_error_at(text: str, path: str, *needles: str, expand: bool = False):
    """The SpecError the study `text`, read as bad.toml (its trials expanded too where `expand`), is refused with:
    at key path `path`, its message starting with the file and holding every needle. Returned for further checks."""
    from ablate.design import expand as expand_trials
    from ablate.errors import SpecError
    from ablate.spec import parse_study

    with pytest.raises(SpecError) as info:
        study = parse_study(text, "bad.toml")
        if expand:
            expand_trials(study)
    error = info.value
    assert error.path == path, str(error)
    for needle in needles:
        assert needle in str(error), str(error)
    assert str(error).startswith("bad.toml: "), str(error)
    return error


class QuietReporter:
    """A run's reporter (ablate.run's Reporter) that shows nothing: for runs whose progress no test looks at."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None
