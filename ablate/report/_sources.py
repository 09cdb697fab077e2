"""Where the report finds a study's data and the researcher's factories: where `ablate run` found them.

Each `ablate run` records on its parent run the data folder it read and the folders it imported the study's factories
from (ablate.tracking's DATA_DIR and IMPORT_PATHS), so a report run from another folder draws the same figures. The
data folder is, for each study: `--data-dir`, else $ABLATE_DATA_DIR, else the folder its latest invocation recorded,
else ./data — what the person asks for now first, then what the run used. The recorded import folders are added to
the import path only where they are the researcher's own (ablate._own_code's foreign_folder), and after everything
else on it, so that none can stand in for a module of Python's or of an installed package.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ablate._own_code import foreign_folder
from ablate.datasets import DATA_DIR_ENV
from ablate.report._report import StudyReport


@dataclass(frozen=True)
class DataSource:
    """A study's data folder, how it was chosen (said when its files are not there), and the recorded import folders
    that were not added, each with why (said when a factory cannot be imported)."""

    folder: Path
    chosen_by: str
    refused: tuple[str, ...] = ()

    def missing(self, problem: str) -> str:
        """Why figures that need the data are not drawn: `problem` (the data's error) and what to do."""
        if self.chosen_by == "--data-dir":
            return f"{problem} (--data-dir)"
        return f"{problem} ({self.chosen_by}); pass --data-dir DIR"

    def unimportable(self, problem: str) -> str:
        """Why figures that need a factory's data are not drawn: `problem`, and the recorded folders not imported."""
        if not self.refused:
            return problem
        return f"{problem}; not imported from, though `ablate run` did: {'; '.join(self.refused)}"


def data_source(report: StudyReport, data_dir: Path | None = None) -> DataSource:
    """The study's data folder (`data_dir`: --data-dir, None when not given), its recorded import folders added to the
    import path where they are the researcher's own."""
    refused = tuple(_import_from(report.import_paths))
    if data_dir is not None:
        return DataSource(Path(data_dir), "--data-dir", refused)
    if os.environ.get(DATA_DIR_ENV):
        return DataSource(Path(os.environ[DATA_DIR_ENV]), f"the data folder ${DATA_DIR_ENV} names", refused)
    if report.data_dir:
        return DataSource(Path(report.data_dir), "the data folder the study's latest `ablate run` recorded", refused)
    return DataSource(Path("data"), "./data, the default: no `ablate run` of the study recorded its data folder",
                      refused)


def import_from_here() -> None:
    """The current folder first on the import path, as `ablate run` puts it: a factory beside the report is found."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def _import_from(folders: tuple[str, ...]) -> list[str]:
    """Each recorded folder that is the researcher's own appended to the import path (after every installed
    package); the others as 'FOLDER (why)'."""
    refused = []
    for folder in folders:
        if folder in sys.path:
            continue
        why = foreign_folder(folder)
        if why is None:
            sys.path.append(folder)
        elif Path(folder).is_dir():  # a folder that is gone (a moved project) holds nothing to import anyway
            refused.append(f"{folder} ({why})")
    return refused
