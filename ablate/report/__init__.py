"""Report: the runs of a study turned into answers — tables with the statistics a paper needs, and figures.

Owns loading a study's runs back from MLflow (its latest design, the latest finished run
per trial, the invocations behind them), the per-arm table (mean ± std, 95% Student-t
interval, paired difference from the baseline arm with Holm-corrected p-values), its
renderings (markdown, CSV, JSON, LaTeX), a grid's main effects and interactions, a search's
Optuna summary, and the figures — drawn from the data and factories where `ablate run` found them (the data
folder and import folders each invocation records), every figure it cannot draw named with why.

May import: ablate.tracking (the store), ablate.datasets (images, shape and class names for
the figures), ablate.models, ablate.design and ablate.spec (sizes of older plans), ablate.search
(a search's storage), ablate._own_code (whether a folder a store names is yours), pandas, scipy, matplotlib;
never torch.
"""

from ablate.report._build import build
from ablate.report._effects import axes_of, interaction_table, marginal_table
from ablate.report._figures import write_figures
from ablate.report._followup import FollowUp, followup
from ablate.report._load import check_store, load_study, study_names
from ablate.report._model_figures import block_labels, block_outputs
from ablate.report._output_figures import per_class_accuracy
from ablate.report._render import (
    COLUMN_KEYS,
    DEFAULT_COLUMNS,
    column_keys,
    latex_table,
    markdown_section,
    markdown_table,
    render,
    summary_frame,
)
from ablate.report._report import PRIMARY_METRICS, StudyReport
from ablate.report._robust import Improvement, bootstrap_interval, probability_of_improvement
from ablate.report._sequential import SequentialComparison, boundaries, sequential_family, sequential_verdict
from ablate.report._stats import holm, mean_interval, paired_difference
from ablate.report._table import summarise
from ablate.report._verdicts import Comparison, Verdict, compare, compare_family

__all__ = [
    "COLUMN_KEYS",
    "Comparison",
    "Improvement",
    "SequentialComparison",
    "Verdict",
    "bootstrap_interval",
    "boundaries",
    "compare",
    "compare_family",
    "probability_of_improvement",
    "sequential_family",
    "sequential_verdict",
    "FollowUp",
    "followup",
    "DEFAULT_COLUMNS",
    "column_keys",
    "PRIMARY_METRICS",
    "StudyReport",
    "axes_of",
    "block_labels",
    "block_outputs",
    "build",
    "check_store",
    "holm",
    "interaction_table",
    "latex_table",
    "load_study",
    "marginal_table",
    "markdown_section",
    "markdown_table",
    "mean_interval",
    "paired_difference",
    "per_class_accuracy",
    "render",
    "study_names",
    "summarise",
    "summary_frame",
    "write_figures",
]
