"""What a person sees in the terminal: `ablate plan`'s trial table (_plan) and data lines (_data: the examples the
trials use, the files' state), `ablate run`'s progress (_progress), and the tables both fit to the console's width
(_tables).

`ablate plan`'s tables fit the console's width without cutting a value: columns wrap at spaces
and never below their longest word, headers name settings by their shortest unambiguous suffix
(with a legend) and break at underscores, and a table too wide even then becomes one block per
trial. `ablate run` shows a live display on a terminal, plain lines otherwise (CI, logs): one bar
for the study (done, failed and running counts, elapsed time and an ETA from finished trials'
durations) and one line per worker (its device, trial, epoch and latest validation accuracy).
Imports neither torch nor MLflow: `ablate plan` draws its table at once.
"""

from ablate.console._data import dataset_info, dataset_line, files_text, used_sizes
from ablate.console._plan import (
    HASH_SHOWN,
    STATUS_ORDER,
    plan_json,
    plan_summary,
    print_plan,
    print_search_plan,
    print_warnings,
    search_plan,
    setting_labels,
    shown_hashes,
    status_of,
)
from ablate.console._progress import (
    ConsoleReporter,
    EtaColumn,
    TrialTimes,
    print_failures,
)
from ablate.console._tables import (
    TABLE_STYLES,
    Column,
    break_header,
    fitted_table,
    pack,
    print_blocks,
    print_fitted,
    print_report_table,
    share_widths,
    terminal,
)

__all__ = [
    "break_header",
    "Column",
    "ConsoleReporter",
    "dataset_info",
    "dataset_line",
    "EtaColumn",
    "files_text",
    "fitted_table",
    "HASH_SHOWN",
    "pack",
    "plan_json",
    "plan_summary",
    "print_blocks",
    "print_failures",
    "print_fitted",
    "print_plan",
    "print_report_table",
    "print_search_plan",
    "print_warnings",
    "search_plan",
    "setting_labels",
    "share_widths",
    "shown_hashes",
    "status_of",
    "STATUS_ORDER",
    "TABLE_STYLES",
    "terminal",
    "TrialTimes",
    "used_sizes",
]
