"""Spec: study files → validated, typed studies. Every check on user input lives here.

Owns the schema (the tables a study file may hold and their documentation, `ablate schema`),
the generic validator that turns TOML into those tables with errors at the user's own key
path, the arms of each design (ladder stages, ablation arms, grid points with their
`[[exclude]]` rules and no-op merging, a search's space and its points) and the Study they
make. The model tables come from ablate.models' registry and the dataset names from
ablate.datasets', so a new model kind or dataset needs no change here.

May import: ablate.errors, ablate.fields, ablate.datasets and ablate.models (their
torch-free registry sides only). Never torch, MLflow or Optuna: `ablate plan` and
`ablate schema` validate studies at once.
"""

from ablate.models import CNNModel, ConvBlock, CustomModel, LinearModel, MLPModel, ModelSpec, ResNetModel
from ablate.spec._arms import naming
from ablate.spec._docs import schema_markdown, schema_rows, schema_tables
from ablate.spec._followup import Change, ablation_text, winner_changes
from ablate.spec._grid import format_label
from ablate.spec._schema import (
    SCHEDULE_KINDS,
    STATS_METRICS,
    AdaptiveSeeds,
    Augment,
    ConstantSchedule,
    CosineSchedule,
    DatasetFactory,
    DataSettings,
    EarlyStopping,
    ExecutionSettings,
    ExponentialSchedule,
    MultiStepSchedule,
    OneCycleSchedule,
    ScheduleSpec,
    Stage,
    StatsSettings,
    StepSchedule,
    Study,
    StudyInfo,
    TrackingSettings,
    TrainSettings,
    TrialSettings,
    WarmupCosineSchedule,
)
from ablate.spec._space import BUDGETS, STARTUP_SAMPLERS, SearchSettings, SearchSpec, SpaceEntry, resolve_point
from ablate.spec._study import MAX_NAME, importable, load_study, parse_study, study_warnings
from ablate.spec._survey import SpaceSurvey, budget_use, point_problem, random_point, survey_space
from ablate.spec._toml import MAX_DEPTH, read_toml, toml_value
from ablate.spec._validate import model_from_dict

__all__ = [
    "AdaptiveSeeds",
    "Augment",
    "BUDGETS",
    "CNNModel",
    "Change",
    "ConstantSchedule",
    "ConvBlock",
    "CosineSchedule",
    "CustomModel",
    "DataSettings",
    "DatasetFactory",
    "EarlyStopping",
    "ExecutionSettings",
    "ExponentialSchedule",
    "LinearModel",
    "MAX_DEPTH",
    "MAX_NAME",
    "MLPModel",
    "ModelSpec",
    "MultiStepSchedule",
    "OneCycleSchedule",
    "ResNetModel",
    "SCHEDULE_KINDS",
    "STARTUP_SAMPLERS",
    "ScheduleSpec",
    "SearchSettings",
    "SearchSpec",
    "SpaceEntry",
    "SpaceSurvey",
    "STATS_METRICS",
    "Stage",
    "StatsSettings",
    "StepSchedule",
    "Study",
    "StudyInfo",
    "TrackingSettings",
    "TrainSettings",
    "TrialSettings",
    "WarmupCosineSchedule",
    "ablation_text",
    "budget_use",
    "format_label",
    "importable",
    "load_study",
    "model_from_dict",
    "naming",
    "parse_study",
    "point_problem",
    "random_point",
    "read_toml",
    "resolve_point",
    "schema_markdown",
    "schema_rows",
    "schema_tables",
    "study_warnings",
    "survey_space",
    "toml_value",
    "winner_changes",
]
