"""Getting a study ready to run, once: the one place that decides the store, the slots and the data.

`load` reads the study file (its factories importable from its folder and the current one: ablate.spec's
`importable`) and expands it;
`prepare` then decides, in this order, everything a run needs and checks it before anything is created:

1. the execution settings, the caller's overrides (the CLI's flags) winning over the study's `[execution]`;
2. the tracking store's URI (`--tracking-uri`, else $MLFLOW_TRACKING_URI, else ./mlflow.db: tracking's
   `store_uri`) and the claims database beside it;
3. the slots, once (with Ray, one query of the cluster, which also checks that its nodes reach the store and
   the claims database), and whether one worker's resident data fits each device (local backend);
4. the store's file (a SQLite store that cannot work is one message, before MLflow loads), and the data
   files, read and checked whole (a bad file is one error, not one failed run per trial);
5. the worker server, started before MLflow loads and starts threads (local backend: see ablate.run's local);
6. the store's `Tracker`, opened on first use (`Prepared.tracker`), so that a caller can say which store and
   data a run uses before MLflow opens it.

`run_study` and `run_search` take the `Prepared` it returns and do none of this again. Nothing here prints:
what a person sees is the caller's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ablate import datasets
from ablate._timeline import mark
from ablate.datasets import data_folder  # decided there, for `ablate plan` too (which never imports ablate.run)
from ablate.design import Trial, expand, resident_needs
from ablate.run._local import LocalBackend, start_worker_server
from ablate.run._slots import Slot, check_memory, plan_slots_for
from ablate.spec import ExecutionSettings, Study, importable, load_study
from ablate.tracking import check_store, claims_url, store_is_new, store_uri

if TYPE_CHECKING:
    from ablate.run._backend import MakeBackend
    from ablate.tracking import Tracker


@dataclass(frozen=True)
class Loaded:
    """A study file read and expanded: every check on the spec done, before torch or MLflow load."""

    study: Study
    trials: list[Trial]  # a search's are none: its trials are asked of Optuna as it runs
    import_paths: tuple[str, ...] = ()  # the folders its factories are imported from (workers import from them too)


def load(study_path: str | Path) -> Loaded:
    import_paths = importable(study_path)
    study = load_study(study_path)
    return Loaded(study, expand(study), import_paths)


def check_data(study: Study, trials: list[Trial], data_dir: Path) -> None:
    """Every dataset the study trains on, read and checked whole: a bad file is one error before anything starts."""
    for dataset in sorted({t.settings.dataset for t in trials} | {study.info.dataset}):
        datasets.check_data(dataset, data_dir)


def placement(execution: ExecutionSettings, backend: MakeBackend | None = None, tracking_uri: str | None = None,
              claims: str | None = None) -> tuple[list[Slot], MakeBackend]:
    """The slots of the execution's backend and how to make it (`backend`: a caller's own, for tests); with the
    `tracking_uri` and `claims` database, whether the backend's workers can reach them is checked too."""
    if execution.backend == "ray":
        from ablate.run._ray import RayBackend
        from ablate.run._ray_cluster import ray_slots

        return ray_slots(execution, tracking_uri, claims), backend or partial(RayBackend, address=execution.address)
    return plan_slots_for(execution), backend or LocalBackend


@dataclass(frozen=True)
class Prepared:
    """A study ready to run: what `prepare` decided and checked, for `run_study` or `run_search`."""

    study: Study
    trials: list[Trial]
    execution: ExecutionSettings  # the study's, with the caller's overrides
    uri: str  # the tracking store
    claims: str  # its claims database
    data_dir: Path
    slots: list[Slot]
    make_backend: MakeBackend
    import_paths: tuple[str, ...] = ()
    storage: str | None = None  # a search's Optuna storage (None for other designs)
    new_store: bool = False  # a SQLite store this run creates

    @cached_property
    def tracker(self) -> Tracker:
        """The store, opened on first use (MLflow loads then), with its claims database."""
        from ablate.tracking import Tracker

        return Tracker(self.uri, self.claims)


def prepare(
    loaded: Loaded, *, tracking_uri: str | None = None, claims: str | None = None, storage: str | None = None,
    data_dir: str | Path | None = None, overrides: dict[str, Any] | None = None, backend: MakeBackend | None = None,
) -> Prepared:
    """Decide and check everything a run needs, in the order of the module's docstring. `overrides`: execution
    settings that win over the study's (None: not given); `backend`: a caller's own (tests), else the execution's."""
    study, trials = loaded.study, loaded.trials
    execution = replace(study.execution, **{k: v for k, v in (overrides or {}).items() if v is not None})
    uri = store_uri(tracking_uri)
    folder = data_folder(data_dir)
    claims_db = claims_url(uri, claims, storage)
    slots, make_backend = placement(execution, backend, tracking_uri=uri, claims=claims_db)
    if execution.backend == "local":  # a cluster's nodes are not this machine's to check
        check_memory(slots, resident_needs(study, trials))
    mark("slots planned")
    check_store(uri, write=True)
    new_store = store_is_new(uri)
    mark("store file checked")
    check_data(study, trials, folder)
    mark("data checked")
    if backend is None and execution.backend == "local":
        start_worker_server()  # before MLflow loads and starts threads (see there)
        mark("worker server started")
    return Prepared(study, trials, execution, uri, claims_db, folder, slots, make_backend, loaded.import_paths,
                    _search_storage(study, uri, storage), new_store)


def _search_storage(study: Study, uri: str, storage: str | None) -> str | None:
    """A search's Optuna storage: --storage, else the journal file beside the store (ablate.search's); None for
    other designs, which have none."""
    if study.search is None:
        return None
    from ablate.search import default_storage

    return storage or default_storage(uri)
