"""The runs view the link `ablate run` prints opens in MLflow's UI: the study's numbers in sight, its trials by arm.

MLflow 3.17's UI keeps a reader's runs table (visible columns, their order, grouping, sort, filter) in the browser:
its localStorage, which a store cannot write, and a first visit shows the run name, its start, Dataset, Duration
and Models, with every metric behind "Columns". What a store can set is a shared view: an experiment tag
`mlflow.sharedViewState.<key>` holding the view's state as JSON, which the UI applies when the URL says
`viewStateShareKey=<key>` (its "Share" button writes one; mlflow/server/js/src: useSharedExperimentViewState and
ExperimentPageUIState, checked against the bundled build). Ablate writes one, `ablate`, on each `ablate run`:

* columns: the study's key metrics (test accuracy, validation accuracy, parameter count) right after the run's name,
  then Dataset and Models (MLflow's column ids, `metrics.\\`test_accuracy\\`` …), every other metric, param and tag
  a click away under "Columns";
* trial runs only (the filter `tags.\\`role\\` != 'parent'`), grouped by arm (the `stage` tag) with each arm's mean
  and every arm expanded to its seeds, arms sorted by mean test accuracy, best first.

The reader sees a banner "You're viewing a shared view", and may leave it or keep it as their own. The URL also says
workflowType=machine_learning (MLflow 3.x otherwise opens an experiment on its GenAI overview, a setting of the
browser) and nothing else: a sort in the URL (orderByKey) makes the UI ignore the shared view. What was tried and
what the UI did: tests/mlflow_ui_check.py, which checks the view in a real browser.
"""

from __future__ import annotations

import json

from ablate.tracking._tags import ROLE, STAGE

VIEW_KEY = "ablate"  # the shared view's id, in the URL
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"  # the experiment tag the UI reads it from
ORDER_METRIC = "test_accuracy"  # what arms and runs are sorted by: the report's primary metric
KEY_METRICS = ("test_accuracy", "val_accuracy", "params_count")


def _column(kind: str, key: str) -> str:
    return f"{kind}.`{key}`"  # the UI's column id (its makeCanonicalSortKey)


def runs_view(arms: list[str]) -> str:
    """The shared view's state (see the module docstring), as the tag's value; `arms`: the stages whose groups start
    expanded."""
    metrics = [_column("metrics", key) for key in KEY_METRICS]
    attributes = [_column("attributes", "Dataset"), _column("attributes", "Models")]
    state = {
        "selectedColumns": metrics + attributes,
        "columnOrder": [_column("attributes", "Run Name"), *metrics, *attributes, "runDateAndNestInfo", "duration"],
        "columnWidths": {_column("attributes", "Dataset"): 220},
        "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": STAGE}]},
        "groupsExpanded": {f"tag.{STAGE}.{arm}": True for arm in dict.fromkeys(arms)},
        "orderByKey": _column("metrics", ORDER_METRIC),
        "orderByAsc": False,
        "searchFilter": f"tags.`{ROLE}` != 'parent'",
    }
    return json.dumps(state, sort_keys=True)


def runs_url(experiment_id: str, base: str = "http://127.0.0.1:5000") -> str:
    """The experiment's runs table in MLflow's UI, in the view above, in the "Model training" workflow (MLflow 3.x opens
    an experiment on its GenAI overview unless the URL or the browser says otherwise). The view's sort and filter are
    its own: with a sort in the URL too (orderByKey), the UI ignores the shared view."""
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"


def models_url(experiment_id: str, base: str = "http://127.0.0.1:5000") -> str:
    """The experiment's Models tab: its logged models (ablate.tracking's _logged), with their metrics."""
    return f"{base}/#/experiments/{experiment_id}/models?workflowType=machine_learning"
