"""`ablate report`'s entry: every study in a store (or one), loaded, and its figures written."""

from __future__ import annotations

from pathlib import Path

from ablate._shell import command
from ablate.errors import AblateError
from ablate.report._draw import FigureFiles
from ablate.report._figures import write_figures
from ablate.report._load import check_store, load_study, study_names
from ablate.report._report import StudyReport
from ablate.report._sources import import_from_here
from ablate.tracking import Tracker


def build(
    uri: str, study: str | None = None, figures: Path | None = None, baseline: str | None = None,
    metric: str = "test_accuracy", data_dir: Path | None = None,
) -> list[StudyReport]:
    """The reports of the store's studies (or of `study`). `figures`: the markdown file the figures go beside, named
    after it (figure_files); None: no figures. `data_dir`: --data-dir, where the figures read the data (else
    $ABLATE_DATA_DIR, else the folder each study's latest `ablate run` recorded, else ./data)."""
    check_store(uri)
    import_from_here()  # a factory the report calls again (the figures' data, an old plan's MACs)
    tracker = Tracker(uri)
    names = [study] if study else study_names(tracker)
    if not names:
        raise AblateError(f"no ablate studies in {uri}; run `{command('ablate')} run STUDY.toml` first")
    if baseline is not None and len(names) != 1:
        raise AblateError("--baseline names an arm of one study: add --study NAME")
    files = {name: figure_files(figures, name, len(names)) if figures is not None else None for name in names}
    reports = [load_study(tracker, name, files[name], baseline, metric) for name in names]
    for report in reports:
        if files[report.name] is not None:
            write_figures(tracker, report, files[report.name].folder, files[report.name].prefix, data_dir)
    return reports


def figure_files(out: Path, study: str, studies: int) -> FigureFiles:
    """Where the figures of `study` go in a report written to `out` that holds `studies` studies: beside it, named
    after it — results/t.md's are results/t-curves.png and so on, or results/t-<study>-curves.png where the report
    holds several studies — so that two reports never write the same file."""
    out = Path(out).resolve()
    return FigureFiles(out.parent, out.stem if studies == 1 else f"{out.stem}-{study}")
