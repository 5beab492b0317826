"""A new SQLite store opened by several processes at once (two trainings started together) must not break."""

from __future__ import annotations

import multiprocessing as mp
import os

import pytest

mlflow = pytest.importorskip("mlflow")

from monai_cnf.tracking import prepare_store  # noqa: E402

PROCESSES = 3


def _start_run(uri: str, barrier, results) -> None:
    """What a training does first with its store: prepare it, then make its experiment and run."""
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    import mlflow

    barrier.wait()  # all processes open the fresh store at the same moment
    try:
        prepare_store(uri)
        client = mlflow.MlflowClient(uri)
        try:
            experiment = client.create_experiment("race")
        except mlflow.exceptions.MlflowException:  # another process made it first
            experiment = client.get_experiment_by_name("race").experiment_id
        client.create_run(experiment)
        results.put("ok")
    except Exception as error:  # reported to the test, which names it
        results.put(f"{type(error).__name__}: {error}"[:300])


def test_processes_starting_together_on_a_fresh_store(tmp_path):
    # Without the lock in prepare_store, MLflow's unlocked table migrations collide here every time we tried
    # (3 of 3 trials: "duplicate column name: step", "table ... already exists", alembic CommandError).
    uri = f"sqlite:///{tmp_path / 'store' / 'mlruns.db'}"
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
    workers = [ctx.Process(target=_start_run, args=(uri, barrier, results)) for _ in range(PROCESSES)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    outcomes = [results.get(timeout=10) for _ in workers]
    assert outcomes == ["ok"] * PROCESSES, outcomes
    client = mlflow.MlflowClient(uri)
    assert len(client.search_runs([client.get_experiment_by_name("race").experiment_id])) == PROCESSES


def test_prepare_store_leaves_other_stores_alone(tmp_path):
    prepare_store("http://127.0.0.1:1")  # a server URI: nothing is contacted or created
    prepare_store(f"sqlite:///{tmp_path / 'a' / 'b.db'}")
    assert (tmp_path / "a" / "b.db").is_file()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b.db"]  # no lock file beside the store
