"""monai_cnf.tracking: the run bookkeeping of CNFMLFlowHandler on a real ignite engine and a SQLite store."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events

from monai_cnf.tracking import (
    EVAL_RUN_ID_FILE,
    CNFMLFlowHandler,
    artifact_location_for,
    default_tracking_uri,
    flatten_config,
    make_sample_grid,
    read_run_id,
    resolve_tracking_uri,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store for the module: creating MLflow's tables takes seconds."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlruns.db'}"


LOSSES = [0.9, 0.7, 0.5, 0.4, 0.3, 0.25]  # 2 epochs x 3 iterations


def _trainer(losses: list[float]) -> Engine:
    def step(engine: Engine, batch: int) -> dict:
        return {"loss": torch.tensor(losses[engine.state.iteration - 1])}

    return Engine(step)


def _train(uri: str, run_dir: Path, max_epochs: int, resume: bool = False, **kwargs) -> CNFMLFlowHandler:
    handler = CNFMLFlowHandler(
        mode="train", run_dir=run_dir, resume=resume, tracking_uri=uri, bundle="tiny", model_kind="cnf", **kwargs
    )
    engine = _trainer(LOSSES)
    handler.attach(engine)
    if resume:  # what the resume checkpoint loader does: restore the epoch before the run starts

        @engine.on(Events.STARTED)
        def _restore(e: Engine) -> None:
            e.state.epoch, e.state.iteration = 1, 3

    engine.run([0, 1, 2], max_epochs=max_epochs)
    return handler


def test_flatten_config_limits() -> None:
    params = flatten_config({"a": {"b": "x" * 10}, "k" * 300: 1}, max_value_length=8)
    assert params["a::b"] == "xxxxx..." and len(params["a::b"]) == 8
    assert ("k" * 250) in params and len(max(params, key=len)) == 250
    assert flatten_config({"h": [{"_target_": "A"}, {"_target_": "B"}]}) == {
        "h::0::_target_": "A",
        "h::1::_target_": "B",
    }


def test_default_store_locations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri() == default_tracking_uri() == f"sqlite:///{tmp_path / 'mlruns.db'}"
    assert artifact_location_for(default_tracking_uri()) == (tmp_path / "mlartifacts").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_tracking_uri() == "http://127.0.0.1:5000" and artifact_location_for("http://x") is None


def test_train_resume_validate_evaluate(tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = store
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "checkpoint_epoch=1.pt").write_bytes(b"weights")
    config = run_dir / "config.json"
    config.write_text(json.dumps({"network_def": {"_target_": "Net", "hidden": 8}, "max_epochs": 2}))

    # first training: killed after epoch 1 (here: max_epochs=1 and the run left open, as SIGKILL would)
    first = CNFMLFlowHandler(mode="train", run_dir=run_dir, tracking_uri=uri, bundle="tiny", config_file=config)
    first.close_on_complete = False
    engine = _trainer(LOSSES)
    first.attach(engine)
    engine.run([0, 1, 2], max_epochs=1)
    run_id = read_run_id(run_dir)
    assert run_id == first.run_id
    client = mlflow.MlflowClient(uri)
    assert client.get_run(run_id).info.status == "RUNNING"

    # resume: same run, continues at epoch 2, closed at the end
    second = _train(uri, run_dir, max_epochs=2, resume=True, config_file=config)
    assert second.run_id == run_id == read_run_id(run_dir)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith((Path(store[len("sqlite:///") :]).parent / "mlartifacts").as_uri())
    epoch_loss = {m.step: m.value for m in client.get_metric_history(run_id, "train_loss_epoch")}
    assert epoch_loss == pytest.approx({1: np.mean(LOSSES[:3]), 2: np.mean(LOSSES[3:])})
    iter_loss = {m.step: m.value for m in client.get_metric_history(run_id, "train_loss")}
    assert iter_loss == pytest.approx({i + 1: v for i, v in enumerate(LOSSES)})
    assert run.data.params["network_def::hidden"] == "8" and run.data.params["network_def::_target_"] == "Net"
    assert run.data.tags["bundle"] == "tiny" and run.data.tags["cnf.mode"] == "train"
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.json", "checkpoints"} <= artifacts
    assert [a.path for a in client.list_artifacts(run_id, "checkpoints")] == ["checkpoints/checkpoint_epoch=1.pt"]

    # validation handler: logs into the training run at the trainer's epoch, with a sample grid
    val = CNFMLFlowHandler(mode="validate", run_dir=run_dir, tracking_uri=uri, bundle="tiny")
    evaluator = Engine(
        lambda e, b: {"image": torch.rand(2, 3, 8, 8), "label": torch.ones(2, 1, 8, 8), "pred": torch.rand(2, 1, 8, 8)}
    )

    @evaluator.on(Events.EPOCH_COMPLETED)
    def _metric(e: Engine) -> None:
        e.state.metrics["val_max_f"] = 0.5

    val.attach(evaluator)
    evaluator.run([0], max_epochs=2)  # MONAI's Evaluator.run(global_epoch=2) ends at state.epoch == 2
    assert {m.step: m.value for m in client.get_metric_history(run_id, "val_max_f")} == {1: 0.5, 2: 0.5}
    grids = [a.path for a in client.list_artifacts(run_id, "samples")]
    assert grids == ["samples/validate_epoch_0001.png", "samples/validate_epoch_0002.png"]

    # evaluation: a new run linked to the training run
    ev = CNFMLFlowHandler(mode="evaluate", run_dir=run_dir, tracking_uri=uri, bundle="tiny", model_kind="cnf")
    ev_engine = Engine(lambda e, b: {"pred": torch.zeros(1, 1, 4, 4)})

    @ev_engine.on(Events.EPOCH_COMPLETED)
    def _eval_metric(e: Engine) -> None:
        e.state.metrics["test_bpd"] = 0.125

    ev.attach(ev_engine)
    ev_engine.run([0], max_epochs=1)
    eval_id = read_run_id(run_dir, EVAL_RUN_ID_FILE)
    assert eval_id is not None and eval_id != run_id
    eval_run = client.get_run(eval_id)
    assert eval_run.data.tags["mlflow.parentRunId"] == run_id == eval_run.data.tags["cnf.training_run_id"]
    assert eval_run.data.metrics["test_bpd"] == 0.125 and eval_run.info.status == "FINISHED"
    assert eval_run.data.tags["model"] == "cnf"
    assert eval_run.info.experiment_id == run.info.experiment_id
    assert client.get_experiment(run.info.experiment_id).name == "tiny"


def test_fresh_training_does_not_reuse_an_open_run(tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = store
    open_run = CNFMLFlowHandler(mode="train", run_dir=tmp_path / "a", tracking_uri=uri, bundle="tiny")
    open_run.close_on_complete = False
    engine = _trainer(LOSSES)
    open_run.attach(engine)
    engine.run([0, 1, 2], max_epochs=1)
    other = _train(uri, tmp_path / "b", max_epochs=1)
    assert other.run_id != open_run.run_id  # MONAI's default would pick "the latest unfinished run"
    assert read_run_id(tmp_path / "b") == other.run_id


def test_validate_without_training_run_is_a_clear_error(
    tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    val = CNFMLFlowHandler(mode="validate", run_dir=tmp_path / "none", tracking_uri=store)
    engine = Engine(lambda e, b: {})
    val.attach(engine)
    with pytest.raises(ValueError, match="mode='train'"):
        engine.run([0], max_epochs=1)
    with pytest.raises(ValueError, match="mode must be one of"):
        CNFMLFlowHandler(mode="fit", tracking_uri=store)


def test_sample_grid_layout() -> None:
    img = torch.zeros(3, 4, 6)
    img[0, 0, 0] = 1.0  # one red pixel, min-max scaled to 255
    grid = make_sample_grid([[img, torch.ones(1, 4, 6)], [img, torch.zeros(1, 4, 6)]], pad=1)
    assert grid.shape == (1 + 2 * 5, 1 + 2 * 7, 3) and grid.dtype == np.uint8
    assert tuple(grid[1, 1]) == (255, 0, 0) and tuple(grid[1, 2]) == (0, 0, 0)
    assert tuple(grid[0, 0]) == (255, 255, 255)  # padding
    assert tuple(grid[1, 8]) == (0, 0, 0)  # a constant panel maps to 0


def test_checkpoints_reach_the_artifact_store_as_they_are_saved(
    tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each epoch's checkpoint is in the run's artifacts by the next epoch's start, mirroring the folder (the saver
    keeps the last 2); a run that dies mid-training keeps what it saved."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    run_dir = tmp_path / "run"
    ckpts = run_dir / "checkpoints"
    handler = CNFMLFlowHandler(mode="train", run_dir=run_dir, tracking_uri=store, bundle="tiny", model_kind="cnf")
    engine = _trainer([0.5] * 12)
    handler.attach(engine)
    seen: list[list[str]] = []

    @engine.on(Events.EPOCH_COMPLETED)
    def _save(e: Engine) -> None:  # what CheckpointSaver(n_saved=2) does, after the tracking handler
        ckpts.mkdir(parents=True, exist_ok=True)
        torch.save({"epoch": e.state.epoch}, ckpts / f"checkpoint_epoch={e.state.epoch}.pt")
        (ckpts / f"checkpoint_epoch={e.state.epoch - 2}.pt").unlink(missing_ok=True)

    @engine.on(Events.EPOCH_STARTED)
    def _look(e: Engine) -> None:
        arts = handler.client.list_artifacts(handler.run_id, "checkpoints")
        seen.append(sorted(Path(a.path).name for a in arts))
        if e.state.epoch == 4:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        engine.run([0, 1, 2], max_epochs=4)
    assert seen == [
        [],
        ["checkpoint_epoch=1.pt"],
        ["checkpoint_epoch=1.pt", "checkpoint_epoch=2.pt"],
        ["checkpoint_epoch=2.pt", "checkpoint_epoch=3.pt"],
    ]


def test_system_metrics_follow_mlflows_switch(tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)  # an in-process CLI test may have left another store set
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "true")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.5")
    handler = CNFMLFlowHandler(mode="train", run_dir=tmp_path / "run", tracking_uri=store, bundle="tiny")
    client = mlflow.MlflowClient(store)

    def step(engine: Engine, batch: int) -> dict:  # train until the monitor has logged (at most 60 x 0.25 s)
        time.sleep(0.25)
        if any(k.startswith("system/") for k in client.get_run(handler.run_id).data.metrics):
            engine.terminate()
        return {"loss": torch.tensor(1.0)}

    engine = Engine(step)
    handler.attach(engine)
    engine.run(list(range(60)), max_epochs=1)
    metrics = client.get_run(handler.run_id).data.metrics
    assert any(k.startswith("system/cpu") for k in metrics), sorted(metrics)
    assert handler._monitor is None  # stopped with the run


def test_resolved_params_are_not_reported_as_changed_by_their_json_spelling(
    tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A fresh run logs `params` (resolved: False, None, [96, 96]) and the config (JSON: false, null, [96,96]):
    one value per key, and no "already logged with another value" on a run that changed nothing."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = run_dir / "config.json"
    config.write_text(json.dumps({"amp": False, "dataset_dir": None, "roi_size": [96, 96], "lr": 0.001}))
    params = {"amp": False, "dataset_dir": None, "roi_size": [96, 96]}
    with caplog.at_level(logging.INFO, logger="monai_cnf"):
        handler = _train(store, run_dir, max_epochs=1, config_file=config, params=params)
    assert not [r for r in caplog.records if "already logged" in r.getMessage()], caplog.text
    logged = mlflow.MlflowClient(store).get_run(handler.run_id).data.params
    assert logged["amp"] == "False" and logged["lr"] == "0.001" and "roi_size" in logged


@pytest.mark.parametrize("before", [None, "sqlite:///elsewhere.db"])
def test_commands_leave_mlflow_tracking_uri_as_they_found_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, before: str | None
) -> None:
    """The CLI sets MLFLOW_TRACKING_URI for its run (MONAI's MLFlowHandler prefers it over its argument); an
    in-process caller must get its own value back, even when the command fails. (Left set, it sent a later test's
    bundle run, explicit tracking_uri and all, into an mlruns.db in the repository's root.)"""
    import os

    from monai_cnf.cli.main import app
    from typer.testing import CliRunner

    monkeypatch.chdir(tmp_path)
    if before is None:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", before)
    bundle = Path(__file__).resolve().parents[2] / "bundles" / "drive_vessel"
    args = ["train", str(bundle), "--preset", "cpu", "--device", "cpu", "--run-dir", str(tmp_path / "run")]
    result = CliRunner().invoke(app, [*args, "--tracking-uri", f"sqlite:///{tmp_path}/x.db", "-o", "max_epoch=3"])
    assert result.exit_code == 1 and "max_epochs" in result.output  # refused after the store was chosen
    assert os.environ.get("MLFLOW_TRACKING_URI") == before
