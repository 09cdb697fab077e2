"""The worker: what it does as it starts, before its first task."""

from __future__ import annotations

from ablate.datasets import _resident
from ablate.run import Slot, Worker, WorkerConfig
from ablate.spec import DataSettings
from ablate.tracking import Identity
from tests.conftest import DATA_DIR

SPLIT = DataSettings(val_size=123, train_limit=321, test_limit=100)  # a split no other test loads


def test_a_worker_loads_its_studys_data_as_it_starts_and_hands_out_that_copy(store):
    """The study's data is read in a thread from the worker's start (beside its first claim), once: a trial asking
    for it waits for that load and gets its copy; a user's dataset factory is left to its trial."""
    config = WorkerConfig(tracking_uri=store, experiment_id="0", parent_run_id="", parent=Identity.of_this_process(),
                          env_tags={}, data_dir=str(DATA_DIR), import_paths=(),
                          data=(("mnist", SPLIT), ("factory:some.module:make#0123456789ab", SPLIT)))
    key = ("mnist", SPLIT, str(DATA_DIR.resolve()), "cpu")  # ablate.datasets' cache key of that load
    assert key not in _resident._CACHE
    worker = Worker(Slot(0, "cpu", 1), config, emit=lambda event: None, die=lambda mid_event: None)
    try:
        assert worker._loading is not None
        worker._loading.join(timeout=60)
        assert key in _resident._CACHE  # loaded by the worker's start, before any trial asked
        settings = type("Settings", (), {"dataset": "mnist", "data": SPLIT})()
        data = worker.data(settings)
        assert data is _resident._CACHE[key] and len(data.train) == 321 and worker._loading is None
    finally:
        worker.close()
