"""``CNFMLFlowHandler``: MONAI's ``MLFlowHandler`` with the project's run bookkeeping.

MONAI's handler already logs the iteration loss, ``engine.state.metrics`` per epoch, the optimizer's learning rate
and artifacts. What it lacks, and this subclass adds:

- the run is chosen explicitly: a fresh run for a fresh training, *the same run* when resuming (its id is stored in
  ``<run_dir>/mlflow_run_id``), the training run for validation handlers, and a new run linked to the training run
  (MLflow's ``mlflow.parentRunId`` tag) for evaluations. MONAI's default instead reuses "the latest unfinished run"
  of the experiment, which after a killed run is the wrong one;
- the project's default store (``sqlite:///<cwd>/mlruns.db``, artifacts in ``mlartifacts`` next to it);
- params = the resolved bundle config, flattened and cut to MLflow's limits; tags = bundle, model kind, git commit;
- the epoch mean of the training loss; sample grids (image | label | prediction) per validation; checkpoints and the
  resolved config as artifacts, keeping their folder structure.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import torch
from monai.handlers import MLFlowHandler, from_engine

from monai_cnf.tracking.utils import (
    EVAL_RUN_ID_FILE,
    RUN_ID_FILE,
    artifact_location_for,
    flatten_config,
    git_commit,
    prepare_store,
    read_run_id,
    resolve_tracking_uri,
    write_run_id,
)

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["MODES", "CNFMLFlowHandler", "make_sample_grid"]

logger = logging.getLogger(__name__)

MODES = ("train", "validate", "evaluate")
_PARENT_TAG = "mlflow.parentRunId"
_TRAINING_RUN_TAG = "cnf.training_run_id"


def _to_uint8(panel: np.ndarray) -> np.ndarray:
    lo, hi = float(panel.min()), float(panel.max())
    scaled = (panel - lo) / (hi - lo) if hi > lo else np.zeros_like(panel)
    return np.clip(np.round(scaled * 255.0), 0, 255).astype(np.uint8)


def _panel(item: Any) -> np.ndarray:
    """One ``(C, *spatial)`` tensor as an ``(H, W, 3)`` uint8 image (3D: the middle slice of the last axis)."""
    arr = item.detach().float().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item, dtype=float)
    while arr.ndim > 3:  # (C, H, W, D) -> middle slice
        arr = arr[..., arr.shape[-1] // 2]
    if arr.ndim == 2:
        arr = arr[None]
    arr = arr[:3] if arr.shape[0] >= 3 else np.repeat(arr[:1], 3, axis=0)
    return _to_uint8(np.moveaxis(arr, 0, -1))


def make_sample_grid(rows: Sequence[Sequence[Any]], pad: int = 2) -> np.ndarray:
    """Tile ``rows[i][j]`` (each a ``(C, *spatial)`` array) into one uint8 RGB image, each panel min-max scaled.

    Args:
        rows: one row per item, one column per key (e.g. image, label, prediction).
        pad: white pixels between panels. Defaults to 2.

    >>> make_sample_grid([[np.zeros((1, 4, 4)), np.ones((3, 4, 4))]], pad=1).shape
    (6, 11, 3)
    """
    panels = [[_panel(p) for p in row] for row in rows]
    if not panels or not panels[0]:
        raise ValueError("rows must hold at least one panel.")
    h = max(p.shape[0] for row in panels for p in row)
    w = max(p.shape[1] for row in panels for p in row)
    ncols = max(len(row) for row in panels)
    grid = np.full((pad + len(panels) * (h + pad), pad + ncols * (w + pad), 3), 255, dtype=np.uint8)
    for i, row in enumerate(panels):
        for j, p in enumerate(row):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            grid[y : y + p.shape[0], x : x + p.shape[1]] = p
    return grid


def _detach_monai_mlflow_handlers(engine: Engine) -> list[MLFlowHandler]:
    """Remove plain MONAI ``MLFlowHandler`` s from ``engine``; return them.

    ``python -m monai.bundle run ... --tracking mlflow`` appends MONAI's own ``MLFlowHandler`` to a bundle's
    ``train#handlers`` and ``validate#handlers``. The bundles already track with :class:`CNFMLFlowHandler` (one run
    per training run, resolved params, linked evaluation runs), so the second handler would open a second run or log
    every metric twice at the same step. It is detached when the engine starts (ours runs first: it comes first in
    the handler list, and ignite fires handlers in order), so ``--tracking mlflow`` gives the bundle's one run.
    """
    found: list[MLFlowHandler] = []

    def monai_owned(entry: tuple) -> bool:
        owner = getattr(entry[0], "__self__", None)
        if isinstance(owner, MLFlowHandler) and not isinstance(owner, CNFMLFlowHandler):
            if owner not in found:
                found.append(owner)
            return True
        return False

    # in place, not engine.remove_event_handler: that swaps in a new list, and the STARTED list being fired right
    # now would still reach MONAI's `start` (it comes after ours, so deleting it from this very list is safe)
    for handlers in engine._event_handlers.values():
        handlers[:] = [entry for entry in handlers if not monai_owned(entry)]
    if found:
        logger.info(
            "%d MONAI MLFlowHandler(s) (monai.bundle --tracking mlflow) detached: the bundle's CNFMLFlowHandler "
            "already tracks this run.",
            len(found),
        )
    return found


def _param_text(value: Any) -> str:
    """A resolved value as MLflow param text (JSON for lists and dicts, ``str`` otherwise), at most 6000 chars."""
    text = json.dumps(value, default=str) if isinstance(value, (list, tuple, dict)) else str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


class CNFMLFlowHandler(MLFlowHandler):
    """MONAI ``MLFlowHandler`` that keeps one MLflow run per training run (resume-safe) and links evaluations to it.

    Use it in a bundle's ``train#handlers`` (``mode="train"``), ``validate#handlers`` (``mode="validate"``) and in
    ``evaluate.json`` (``mode="evaluate"``); all three take the same ``run_dir`` (the bundle's ``output_dir``).

    ``mode="train"``: a new run, or with ``resume=True`` the run whose id is stored in ``run_dir/mlflow_run_id``
    (reopened if it was marked finished or failed); writes that file; logs the resolved config as params and
    artifact, tags, the iteration loss (``tag_name``), its epoch mean (``<tag_name>_epoch``), the learning rate,
    ``engine.state.metrics`` per epoch, and at completion the ``checkpoints`` and ``models`` folders of ``run_dir``
    (and any ``artifacts``); closes the run when training completes.
    ``mode="validate"``: logs the evaluator's metrics per epoch into the training run (MONAI's ``Evaluator.run``
    receives the trainer's epoch, so the step is the training epoch) and a sample grid; never closes the run.
    ``mode="evaluate"``: a new run tagged ``mlflow.parentRunId`` = ``cnf.training_run_id`` = the training run
    (``training_run_id``, else the id stored in ``run_dir``), logs metrics, config, a sample grid; writes its id to
    ``run_dir/mlflow_eval_run_id``; closes at completion.

    Args:
        mode: ``"train"``, ``"validate"`` or ``"evaluate"``. Defaults to ``"train"``.
        run_dir: the run folder (the bundle's ``output_dir``). Defaults to ``None`` (no run-id file, no
            checkpoint artifacts; ``resume`` and ``"validate"`` then need a live training handler's run in the
            experiment and fall back to MONAI's choice).
        resume: continue the run stored in ``run_dir``. Defaults to ``False``.
        training_run_id: the training run an evaluation belongs to. Defaults to the id stored in ``run_dir``.
        config_file: the resolved config (JSON) to log as params and artifact; skipped if the file does not exist.
            Defaults to ``None``.
        bundle: bundle name, tag ``bundle``. Defaults to ``None`` (the experiment name).
        model_kind: ``"cnf"`` or ``"factored"``, tag ``model``. Defaults to ``None`` (no tag).
        tags: extra run tags. Defaults to ``None``.
        params: the run's hyperparameters as resolved values (a bundle passes its own keys, e.g.
            ``{"learning_rate": "@learning_rate"}``, which MONAI's parser resolves to numbers), logged at the start
            with or without the CLI; a value changed on resume is kept as first logged (MLflow params are immutable)
            and the change is logged. Defaults to ``None``.
        system_metrics: log MLflow's system metrics (CPU, memory, GPU: ``system/...``) into the run while the engine
            runs; None follows MLflow's own switch (``MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=true`` or
            ``mlflow.enable_system_metrics_logging()``; interval ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL``).
            The runs are made with ``MlflowClient``, which never starts MLflow's monitor, so this handler starts it.
            Training and evaluation only. Defaults to None.
        grid_keys: keys of ``engine.state.output`` tiled into a sample grid at each epoch end of a validation or
            evaluation (first ``grid_items`` items); ``None`` or ``()`` disables it. Defaults to
            ``("image", "label", "pred")``.
        grid_items: rows of the sample grid. Defaults to 4.
        tracking_uri: MLflow store. Defaults to ``MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlruns.db``.
        experiment_name: MLflow experiment (one per bundle). Defaults to ``bundle`` or ``"monai_cnf"``.
        run_name: MLflow run name. Defaults to ``None`` (``run_<date>_<time>``).
        artifact_location: artifact root of a *new* experiment. Defaults to ``mlartifacts`` next to a SQLite store.
        tag_name: name of the iteration loss metric. Defaults to ``"train_loss"``.
        output_transform: ``engine.state.output`` -> loss. Defaults to ``from_engine(["loss"], first=True)``.
        kwargs: any other ``monai.handlers.MLFlowHandler`` argument (``iteration_log``, ``epoch_log``,
            ``state_attributes``, ``global_epoch_transform``, ``artifacts``, ``optimizer_param_names``, ...).

    Example (``train.json``)::

        {"_target_": "monai_cnf.tracking.CNFMLFlowHandler", "mode": "train", "run_dir": "@output_dir",
         "resume": "@resume", "tracking_uri": "@tracking_uri", "experiment_name": "@experiment_name",
         "run_name": "@run_name", "config_file": "$@output_dir + '/config.json'", "bundle": "drive_vessel",
         "model_kind": "@model_kind"}
    """

    def __init__(
        self,
        mode: str = "train",
        run_dir: str | os.PathLike | None = None,
        resume: bool = False,
        training_run_id: str | None = None,
        config_file: str | os.PathLike | None = None,
        bundle: str | None = None,
        model_kind: str | None = None,
        tags: Mapping[str, Any] | None = None,
        grid_keys: Sequence[str] | None = ("image", "label", "pred"),
        grid_items: int = 4,
        tracking_uri: str | None = None,
        experiment_name: str | None = None,
        run_name: str | None = None,
        artifact_location: str | None = None,
        tag_name: str = "train_loss",
        output_transform: Callable | None = None,
        params: Mapping[str, Any] | None = None,
        system_metrics: bool | None = None,
        **kwargs: Any,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
        if grid_items < 1:
            raise ValueError(f"grid_items must be >= 1, got {grid_items}.")
        uri = resolve_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI") or tracking_uri)
        prepare_store(uri)  # folder and tables, one process at a time (several runs may start at once)
        if mode != "train":
            kwargs.setdefault("iteration_log", False)
        super().__init__(
            tracking_uri=uri,
            experiment_name=experiment_name or bundle or "monai_cnf",
            run_name=run_name,
            artifact_location=artifact_location or artifact_location_for(uri),
            tag_name=tag_name,
            output_transform=output_transform or from_engine(["loss"], first=True),
            close_on_complete=mode != "validate",
            **kwargs,
        )
        self.mode = mode
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.resume = bool(resume)
        self.training_run_id = training_run_id
        self.config_file = Path(config_file) if config_file is not None else None
        self.bundle = bundle
        self.model_kind = model_kind
        self.tags = dict(tags or {})
        self.params = {str(k): v for k, v in (params or {}).items()}
        self.system_metrics = system_metrics
        self._monitor: Any = None
        self._uploaded: dict[str, float] = {}  # checkpoint file -> mtime already in the artifact store
        self.grid_keys = tuple(grid_keys or ())
        self.grid_items = grid_items
        self._loss_sum = 0.0
        self._loss_count = 0
        self._last_run_id: str | None = None

    # ------------------------------------------------------------------ run selection
    @property
    def run_id(self) -> str | None:
        """The MLflow run this handler logs (or logged) to; ``None`` before the engine started."""
        return self.cur_run.info.run_id if self.cur_run is not None else self._last_run_id

    def _stored_run(self) -> Any | None:
        if self.run_dir is None:
            return None
        run_id = read_run_id(self.run_dir, RUN_ID_FILE)
        if run_id is None:
            return None
        try:
            return self.client.get_run(run_id)
        except mlflow.exceptions.MlflowException:
            logger.warning("MLflow run %s stored in %s is not in the store %s.", run_id, self.run_dir, self.client)
            return None

    def _new_run(self, tags: dict[str, str]) -> Any:
        run_name = self.run_name or f"{'run' if self.mode == 'train' else self.mode}_{time.strftime('%Y%m%d_%H%M%S')}"
        return self.client.create_run(experiment_id=self.experiment.experiment_id, run_name=run_name, tags=tags)

    def _choose_run(self) -> None:
        tags = self._run_tags()
        if self.mode == "train":
            run = self._stored_run() if self.resume else None
            if self.resume and run is None:
                logger.warning("resume=True but no MLflow run is stored in %s: starting a new run.", self.run_dir)
            if run is None:
                run = self._new_run(tags)
            else:
                if run.info.status != "RUNNING":
                    self.client.update_run(run.info.run_id, status="RUNNING")
                logger.info("Resuming MLflow run %s.", run.info.run_id)
            if self.run_dir is not None:
                write_run_id(self.run_dir, run.info.run_id, RUN_ID_FILE)
        elif self.mode == "validate":
            run = self._stored_run()
            if run is None:
                raise ValueError(
                    f"mode='validate' logs into the training run stored in run_dir={self.run_dir!s}/{RUN_ID_FILE}, "
                    "but there is none: attach a mode='train' CNFMLFlowHandler with the same run_dir to the trainer."
                )
        else:
            parent = self.training_run_id or (read_run_id(self.run_dir) if self.run_dir is not None else None)
            if parent is not None:
                tags = {**tags, _PARENT_TAG: parent, _TRAINING_RUN_TAG: parent}
            else:
                logger.warning("No training run to link this evaluation to (no %s in %s).", RUN_ID_FILE, self.run_dir)
            run = self._new_run(tags)
            if self.run_dir is not None:
                write_run_id(self.run_dir, run.info.run_id, EVAL_RUN_ID_FILE)
        self.cur_run = self.client.get_run(run.info.run_id)
        self._last_run_id = run.info.run_id
        if self.mode != "validate":
            self._set_tags(tags)

    def _run_tags(self) -> dict[str, str]:
        tags = {"bundle": self.bundle or self.experiment_name, "cnf.mode": self.mode}
        if self.model_kind:
            tags["model"] = str(self.model_kind)
        # the code's commit (this package's checkout), else the working directory's repository
        commit = git_commit(Path(__file__).parent) or git_commit()
        if commit is not None:
            tags["mlflow.source.git.commit"] = commit
            tags["git_commit"] = commit
        tags.update({str(k): str(v) for k, v in self.tags.items()})
        return tags

    def _set_tags(self, tags: Mapping[str, str]) -> None:
        run_tags = [mlflow.entities.RunTag(k, v[:8000]) for k, v in tags.items()]
        for i in range(0, len(run_tags), 100):
            self.client.log_batch(self.cur_run.info.run_id, metrics=[], params=[], tags=run_tags[i : i + 100])

    # ------------------------------------------------------------------ ignite events
    def attach(self, engine: Engine) -> None:
        """Register MONAI's events plus the epoch mean of the loss (train) and sample grids (validate/evaluate)."""
        from ignite.engine import Events

        super().attach(engine)
        if self.mode == "train":
            if not engine.has_event_handler(self._reset_epoch_loss, Events.EPOCH_STARTED):
                engine.add_event_handler(Events.EPOCH_STARTED, self._reset_epoch_loss)
            if not engine.has_event_handler(self._accumulate_loss, Events.ITERATION_COMPLETED):
                engine.add_event_handler(Events.ITERATION_COMPLETED, self._accumulate_loss)
            if not engine.has_event_handler(self._log_epoch_loss, Events.EPOCH_COMPLETED):
                engine.add_event_handler(Events.EPOCH_COMPLETED, self._log_epoch_loss)
            if not engine.has_event_handler(self._upload_new_checkpoints, Events.EPOCH_STARTED):
                engine.add_event_handler(Events.EPOCH_STARTED, self._upload_new_checkpoints)
        elif self.grid_keys and not engine.has_event_handler(self._log_sample_grid, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self._log_sample_grid)

    def start(self, engine: Engine) -> None:
        """Pick (or create) the run, then let MONAI log its default params; log the resolved config once."""
        _detach_monai_mlflow_handlers(engine)
        if self.cur_run is None or self.mode == "evaluate":
            self._set_experiment()
            self.cur_run = None
            self._choose_run()
        super().start(engine)
        if self.mode != "validate":
            self._log_params_once({k: _param_text(v) for k, v in self.params.items()})
            self._log_config()
            self._start_system_metrics()

    def _start_system_metrics(self) -> None:
        from mlflow.environment_variables import (
            MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING,
            MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL,
        )

        wanted = MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING.get() if self.system_metrics is None else self.system_metrics
        if not wanted or self._monitor is not None or self.cur_run is None:
            return
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self._monitor = SystemMetricsMonitor(
                self.cur_run.info.run_id, sampling_interval=MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL.get() or 10,
                resume_logging=self.resume, tracking_uri=self.client.tracking_uri,
            )  # fmt: skip
            self._monitor.start()
        except Exception as err:  # e.g. psutil missing: tracking must not stop the training
            logger.warning("MLflow system metrics not logged: %s", err)
            self._monitor = None

    def _stop_system_metrics(self) -> None:
        if self._monitor is not None:
            try:
                self._monitor.finish()
            finally:
                self._monitor = None

    def close(self) -> None:
        """Stop the system-metrics monitor, then end the run as MONAI does."""
        self._stop_system_metrics()
        super().close()

    def _upload_new_checkpoints(self, engine: Engine | None = None) -> None:
        """Copy checkpoint files written since the last call to the run's ``checkpoints/`` artifacts.

        Called at each epoch start (the previous epoch's checkpoint is on disk by then: the savers run after this
        handler at epoch end) and at completion, so a killed run's artifacts hold every checkpoint it saved.
        """
        folder = self.run_dir / "checkpoints" if self.run_dir is not None else None
        if self.cur_run is None or folder is None or not folder.is_dir():
            return
        run_id = self.cur_run.info.run_id
        local = {p.name: p for p in folder.glob("*.pt")}
        for name, path in sorted(local.items()):
            mtime = path.stat().st_mtime
            if self._uploaded.get(name) != mtime:
                self.client.log_artifact(run_id, str(path), artifact_path="checkpoints")
                self._uploaded[name] = mtime
        # mirror the folder (the saver keeps the last n): drop what it deleted, or the store grows every epoch
        stale = [a.path for a in self.client.list_artifacts(run_id, "checkpoints") if Path(a.path).name not in local]
        if stale:
            try:
                from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

                repo = get_artifact_repository(self.client.get_run(run_id).info.artifact_uri)
                for path in stale:
                    repo.delete_artifacts(path)
            except Exception as err:  # a store that cannot delete: keep the extra files, say so once
                if not getattr(self, "_warned_delete", False):
                    logger.warning("old checkpoints stay in the artifact store (cannot delete: %s)", err)
                    self._warned_delete = True

    def _log_config(self) -> None:
        if self.config_file is None or not self.config_file.is_file():
            if self.config_file is not None:
                logger.info("No resolved config at %s: config params not logged.", self.config_file)
            return
        config = json.loads(self.config_file.read_text())
        config.pop("_meta_", None)  # the bundle's metadata (ConfigParser.read_meta): static, kept in the artifact
        # expressions and references ("$@network_def.to(@torch_device)") are code, not hyperparameters: their
        # resolved values come through `params`; the whole config (with them) is the logged artifact
        params = {k: v for k, v in flatten_config(config).items() if not v.startswith(("$", "@"))}
        # a key given as a resolved value (`params`) is logged as that; its JSON spelling (`false` for False,
        # `null` for None) is not a second value
        params = {k: v for k, v in params.items() if k not in self.params}
        self._log_params_once(params)
        if self.config_file.name not in {a.path for a in self.client.list_artifacts(self.cur_run.info.run_id)}:
            self.client.log_artifact(self.cur_run.info.run_id, str(self.config_file))

    def _log_params_once(self, params: Mapping[str, str]) -> None:
        """Log the params the run does not hold yet; report (not fail on) values that differ from the logged ones."""
        if not params:
            return
        logged = self.client.get_run(self.cur_run.info.run_id).data.params
        changed = sorted(k for k, v in params.items() if k in logged and logged[k] != v)
        if changed:
            logger.info("Params already logged with another value (MLflow params are immutable): %s", changed)
        new = [mlflow.entities.Param(k, v) for k, v in params.items() if k not in logged]
        for i in range(0, len(new), 100):
            self.client.log_batch(self.cur_run.info.run_id, metrics=[], params=new[i : i + 100], tags=[])

    def _reset_epoch_loss(self, engine: Engine) -> None:
        self._loss_sum, self._loss_count = 0.0, 0

    def _accumulate_loss(self, engine: Engine) -> None:
        loss = self.output_transform(engine.state.output)
        if isinstance(loss, (tuple, list)) and len(loss) == 1:
            loss = loss[0]
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            loss = loss.item()
        if isinstance(loss, (int, float)):
            self._loss_sum += float(loss)
            self._loss_count += 1

    def _log_epoch_loss(self, engine: Engine) -> None:
        if self._loss_count:
            mean = self._loss_sum / self._loss_count
            self._log_metrics({f"{self.tag_name}_epoch": mean}, step=self.global_epoch_transform(engine.state.epoch))

    def _default_iteration_log(self, engine: Engine) -> None:
        # MONAI's version calls `.item()` only on a bare tensor; from_engine returns a 1-tuple for a dict output.
        output_transform = self.output_transform

        def _scalar(output: Any) -> Any:
            loss = output_transform(output)
            return loss[0] if isinstance(loss, (tuple, list)) and len(loss) == 1 else loss

        self.output_transform = _scalar
        try:
            super()._default_iteration_log(engine)
        finally:
            self.output_transform = output_transform

    def _grid_rows(self, output: Any) -> list[list[Any]]:
        if isinstance(output, Mapping):
            keys = [k for k in self.grid_keys if isinstance(output.get(k), torch.Tensor)]
            n = min([output[k].shape[0] for k in keys] + [self.grid_items])
            return [[output[k][i] for k in keys] for i in range(n)] if keys else []
        if isinstance(output, (list, tuple)) and output and isinstance(output[0], Mapping):
            keys = [k for k in self.grid_keys if isinstance(output[0].get(k), torch.Tensor)]
            return [[item[k] for k in keys] for item in output[: self.grid_items]] if keys else []
        return []

    def _log_sample_grid(self, engine: Engine) -> None:
        from PIL import Image

        rows = self._grid_rows(engine.state.output)
        if not rows or self.cur_run is None:
            return
        step = int(self.global_epoch_transform(engine.state.epoch))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{self.mode}_epoch_{step:04d}.png"
            Image.fromarray(make_sample_grid(rows)).save(path)
            self.client.log_artifact(self.cur_run.info.run_id, str(path), artifact_path="samples")

    def complete(self) -> None:
        """Log ``artifacts``; for training also the run folder's ``checkpoints`` and ``models`` (structure kept)."""
        if self.cur_run is None:
            return
        paths = [Path(p) for p in self.artifacts if p]
        if self.mode == "train" and self.run_dir is not None:
            paths += [self.run_dir / name for name in ("checkpoints", "models") if (self.run_dir / name).is_dir()]
        for path in paths:
            if path.is_dir():
                self.client.log_artifacts(self.cur_run.info.run_id, str(path), artifact_path=path.name)
            elif path.is_file():
                self.client.log_artifact(self.cur_run.info.run_id, str(path))
