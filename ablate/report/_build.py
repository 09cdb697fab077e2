"""`ablate report`'s entry: every study in a store (or one), loaded, and its figures written."""

from __future__ import annotations

from pathlib import Path

from ablate._shell import command
from ablate.errors import AblateError
from ablate.report._figures import write_figures
from ablate.report._load import check_store, load_study, study_names
from ablate.report._report import StudyReport
from ablate.tracking import Tracker


def build(
    uri: str, study: str | None = None, figures: Path | None = None, baseline: str | None = None,
    metric: str = "test_accuracy",
) -> list[StudyReport]:
    check_store(uri)
    tracker = Tracker(uri)
    names = [study] if study else study_names(tracker)
    if not names:
        raise AblateError(f"no ablate studies in {uri}; run `{command('ablate')} run STUDY.toml` first")
    if baseline is not None and len(names) != 1:
        raise AblateError("--baseline names an arm of one study: add --study NAME")
    reports = [load_study(tracker, name, figures, baseline, metric) for name in names]
    if figures is not None:
        for report in reports:
            write_figures(tracker, report, figures)
    return reports
