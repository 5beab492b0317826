"""``cnf train`` / ``cnf evaluate``: run a bundle's ConfigWorkflow with the contract's overrides.

The bundle does the work (``initialize``, ``run``, ``finalize`` of ``monai.bundle.ConfigWorkflow``); this module
chooses the config files and overrides, protects what a run folder already holds, and collects the results.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monai_cnf.cli._bundle import (
    Bundle,
    compose_config_files,
    export_config,
    load_bundle,
    make_workflow,
    missing_keys,
    parse_overrides,
    resolve_device,
    resolve_preset,
)
from monai_cnf.cli._errors import CLIError

__all__ = ["CONTRACT_KEYS", "RunResult", "check_run_dir", "find_checkpoint", "run_evaluation", "run_training"]

logger = logging.getLogger("monai_cnf.cli")

#: Top-level keys of train.json / evaluate.json that the CLI overrides (bundle_cli_contract.md).
CONTRACT_KEYS = (
    "bundle_root",
    "output_dir",
    "dataset_dir",
    "device",
    "max_epochs",
    "tracking_uri",
    "experiment_name",
    "run_name",
    "resume",
)
_CKPT_SUFFIXES = (".pt", ".pth")


@dataclass
class RunResult:
    """What a ``cnf train`` / ``cnf evaluate`` run reports."""

    bundle: str
    run_dir: Path
    config_files: list[Path]
    tracking_uri: str
    metrics: dict[str, float] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)


#: written by ``cnf train`` into the run folder: the resolved config of the first start, and of the latest resume
TRAIN_CONFIG, RESUME_CONFIG = "config.json", "config_resume.json"


def trained_config(run_dir: Path | None) -> Path | None:
    """The resolved config a run folder's weights were last trained with, or None.

    Every ``cnf train --resume`` writes a new ``config_resume.json`` (``config_resume.1.json``, ``.2.json``, ...:
    configs are never overwritten); the newest carries the overrides and bundle changes of the latest resume, and
    wins over ``config.json`` (the first start's, kept as the run's record).

    Example:
        >>> import tempfile
        >>> run = Path(tempfile.mkdtemp())
        >>> trained_config(run) is None
        True
        >>> _ = (run / "config.json").write_text("{}"); trained_config(run).name
        'config.json'
        >>> _ = (run / "config_resume.json").write_text("{}"); trained_config(run).name
        'config_resume.json'
        >>> for n in (2, 10): _ = (run / f"config_resume.{n}.json").write_text("{}")
        >>> trained_config(run).name
        'config_resume.10.json'
    """
    if run_dir is None:
        return None
    stem = Path(RESUME_CONFIG).stem
    resumes = {0: Path(run_dir) / RESUME_CONFIG}
    for path in Path(run_dir).glob(f"{stem}.*.json"):
        number = path.name[len(stem) + 1 : -len(".json")]
        if number.isdigit():
            resumes[int(number)] = path
    for path in (*(resumes[n] for n in sorted(resumes, reverse=True)), Path(run_dir) / TRAIN_CONFIG):
        if path.is_file():
            return path
    return None


def _checkpoints(run_dir: Path, folders: Sequence[str] = ("checkpoints",)) -> list[Path]:
    found: list[Path] = []
    for name in folders:
        folder = run_dir / name
        if folder.is_dir():
            found += sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _CKPT_SUFFIXES)
    return found


def find_checkpoint(run_dir: Path) -> Path | None:
    """The weights of a run folder to evaluate or sample with.

    In order: ``models/model.pt`` (the best validation metric, as the bundles save it), ``models/model_final.pt``,
    the newest ``checkpoints/checkpoint_epoch=N.pt``, else the newest ``.pt`` anywhere in those folders.
    """
    for name in ("model.pt", "model_final.pt"):
        if (run_dir / "models" / name).is_file():
            return run_dir / "models" / name
    try:
        from monai_cnf.engines import latest_checkpoint

        latest = latest_checkpoint(run_dir / "checkpoints")
        if latest is not None:
            return Path(latest)
    except ImportError:  # engines not importable: fall back to modification time
        pass
    ckpts = _checkpoints(run_dir, ("models", "checkpoints"))
    return max(ckpts, key=lambda p: p.stat().st_mtime) if ckpts else None


def check_checkpoint(path: Path) -> None:
    """Fail with one clear line when ``path`` is missing, truncated or not a torch checkpoint."""
    from monai_cnf.engines import CorruptCheckpointError, load_checkpoint

    try:
        load_checkpoint(path, map_location="cpu")
    except (FileNotFoundError, CorruptCheckpointError) as err:
        raise CLIError(str(err)) from None


def _tracking(tracking_uri: str | None) -> str:
    from monai_cnf.tracking.utils import resolve_tracking_uri, sqlite_path

    uri = resolve_tracking_uri(tracking_uri)
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    # MONAI's MLFlowHandler prefers the environment variable over its argument: make both agree.
    os.environ["MLFLOW_TRACKING_URI"] = uri
    return uri


def _base_overrides(
    bundle: Bundle,
    run_dir: Path,
    device: str,
    tracking_uri: str,
    experiment: str | None,
    run_name: str | None,
    dataset_dir: Path | None,
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "bundle_root": str(bundle.root),
        "output_dir": str(run_dir),
        "device": device,
        "tracking_uri": tracking_uri,
        "experiment_name": experiment or bundle.name,
    }
    if run_name is not None:
        out["run_name"] = run_name
    if dataset_dir is not None:
        out["dataset_dir"] = str(Path(dataset_dir).absolute())
    out.update(extra)
    return out


def _scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        try:
            value = float(v)
        except (TypeError, ValueError):
            continue
        out[str(k)] = value
    return out


def _parsed(workflow: Any, key: str) -> Any:
    try:
        return workflow.parser.get_parsed_content(key) if key in workflow.parser else None
    except Exception:  # a summary must not turn a finished run into a failure
        logger.debug("could not read %s from the workflow", key, exc_info=True)
        return None


def _run_workflow(workflow: Any, run_dir: Path, run_id_file: str | None) -> None:
    """initialize -> run -> finalize; an MLflow run left open by a failure is marked FAILED (KILLED on Ctrl-C).

    ``run_id_file`` None: the process owns no MLflow run (a rank > 0 under torchrun).
    """
    try:
        workflow.initialize()
        workflow.run()
    except BaseException as err:
        if run_id_file is not None:
            _mark_run(run_dir, run_id_file, "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        raise
    finally:
        try:
            workflow.finalize()
        except Exception:  # finalize must not hide the original error
            logger.debug("finalize failed", exc_info=True)


def _mark_run(run_dir: Path, run_id_file: str, status: str) -> None:
    from monai_cnf.tracking.utils import read_run_id

    run_id = read_run_id(run_dir, run_id_file)
    if run_id is None:
        return
    try:
        import mlflow

        client = mlflow.MlflowClient()
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, status)
    except Exception:  # best effort: the store may be what failed
        logger.debug("could not mark MLflow run %s %s", run_id, status, exc_info=True)


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """A fresh training never writes into a run folder holding checkpoints; ``--resume`` needs one to resume."""
    existing = _checkpoints(run_dir, ("checkpoints", "models"))
    if existing and not resume:
        raise CLIError(
            f"run folder {run_dir} already holds {len(existing)} checkpoint(s) (e.g. {existing[-1].name}); "
            "pass --resume to continue that run or choose another --run-dir (nothing was changed)."
        )
    if resume and not _checkpoints(run_dir):
        raise CLIError(f"--resume: no checkpoint in {run_dir / 'checkpoints'} to resume from; train without --resume.")


def default_run_dir(bundle_name: str, model: str, run_dir: Path | None) -> Path:
    """``--run-dir``, else ``runs/<bundle>-<model>``, absolute."""
    return Path(run_dir or Path("runs") / f"{bundle_name}-{model}").absolute()


def run_training(
    bundle_path: Path,
    *,
    dataset_dir: Path | None = None,
    max_epochs: int | None = None,
    device: str | None = None,
    model: str = "cnf",
    preset: str = "auto",
    resume: bool = False,
    overrides: Sequence[str] = (),
    tracking_uri: str | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
    run_dir: Path | None = None,
    amp: bool = False,
) -> RunResult:
    """Train a bundle: ``train.json`` + preset + model overlays, run folder protected, tracked in MLflow.

    In a process started by ``torchrun`` (``cnf train --nproc-per-node N``), the bundle's ``multi_gpu_train.json``
    is merged last; rank 0 alone writes the resolved config (without that overlay, so the run folder evaluates and
    resumes in one process too), checkpoints and MLflow.
    """
    from monai_cnf.cli._launch import MULTI_GPU_TRAIN, is_torchrun_worker, worker_rank

    from monai_cnf.tracking.utils import RUN_ID_FILE, read_run_id

    bundle = load_bundle(bundle_path)
    user = parse_overrides(overrides)
    device = resolve_device(device)
    preset = resolve_preset(preset, device)
    if max_epochs is not None and max_epochs < 1:
        raise CLIError(f"--max-epochs must be >= 1, got {max_epochs}.")
    run_dir = default_run_dir(bundle.name, model, run_dir)
    check_run_dir(run_dir, resume)
    record = compose_config_files(bundle, "train", preset, model)
    distributed = is_torchrun_worker()
    files = [*record, bundle.config(MULTI_GPU_TRAIN, "needed by --nproc-per-node")] if distributed else record
    main = worker_rank() == 0
    uri = _tracking(tracking_uri)
    extra: dict[str, Any] = {"resume": resume}
    if max_epochs is not None:
        extra["max_epochs"] = max_epochs
    if amp:
        extra["amp"] = True
    extra.update(user)
    ovr = _base_overrides(bundle, run_dir, device, uri, experiment, run_name, dataset_dir, extra)
    workflow = make_workflow(bundle, files, {}, workflow_type="train")
    gone = missing_keys(workflow, [k for k in CONTRACT_KEYS if k in ovr and k not in user])
    if gone and main:
        logger.warning("bundle %s does not define the contract keys %s; setting them anyway.", bundle.name, gone)
    workflow.parser.update(ovr)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / TRAIN_CONFIG
    if main:
        recorded = workflow
        if distributed:  # the run's config without the launcher's overlay
            recorded = make_workflow(bundle, record, {}, workflow_type="train")
            recorded.parser.update(ovr)
        if not config_path.exists():
            export_config(recorded, config_path)
        else:
            config_path = export_config(recorded, run_dir / RESUME_CONFIG)
    _run_workflow(workflow, run_dir, RUN_ID_FILE if main else None)

    result = RunResult(bundle.name, run_dir, files, uri)
    trainer = _parsed(workflow, "train#trainer")
    if trainer is not None:
        state = trainer.state
        result.info.update(
            {
                "epochs": f"{state.epoch}/{state.max_epochs}",
                "iterations": str(state.iteration),
            }
        )
        result.metrics.update({f"train_{k}": v for k, v in _scalar_metrics(state.metrics or {}).items()})
        out = state.output
        out = out[0] if isinstance(out, list) and out else out
        if isinstance(out, Mapping) and "loss" in out:
            result.metrics["train_loss (last)"] = float(out["loss"])
    evaluator = _parsed(workflow, "validate#evaluator")
    if evaluator is not None:
        result.metrics.update(_scalar_metrics(evaluator.state.metrics or {}))
        best = getattr(evaluator.state, "best_metric", None)
        if best is not None and best != -1:
            result.metrics["best_metric"] = float(best)
    run_id = read_run_id(run_dir)
    if distributed:
        result.info["processes"] = os.environ.get("WORLD_SIZE", "1")
    result.info.update(
        {
            "preset / model": f"{preset} / {model}",
            "configs": " + ".join(p.name for p in files),
            "checkpoints": str(run_dir / "checkpoints"),
            "weights (best / final)": str(find_checkpoint(run_dir) or "(none)"),
            "resolved config": str(config_path),
            "MLflow run": run_id or "(none stored)",
            "MLflow store": uri,
        }
    )
    return result


def run_evaluation(
    bundle_path: Path,
    *,
    split: str = "test",
    checkpoint: Path | None = None,
    run_dir: Path | None = None,
    dataset_dir: Path | None = None,
    device: str | None = None,
    model: str = "cnf",
    preset: str = "auto",
    num_samples: int | None = None,
    temperature: float | None = None,
    overrides: Sequence[str] = (),
    tracking_uri: str | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
) -> RunResult:
    """Evaluate a checkpoint on a split with the bundle's metrics; an MLflow run linked to the training run.

    With a run folder holding ``config.json`` (written by ``cnf train``), the configs are that resolved training
    config (``config_resume.json`` after a resume: see :func:`trained_config`) + ``evaluate.json``, so the network
    is built as it was trained; otherwise ``train.json`` + the ``--preset``/``--model`` overlays + ``evaluate.json``.
    """
    from monai_cnf.tracking.utils import EVAL_RUN_ID_FILE, RUN_ID_FILE, read_run_id

    bundle = load_bundle(bundle_path)
    user = parse_overrides(overrides)
    device = resolve_device(device)
    preset = resolve_preset(preset, device)
    run_dir = Path(run_dir or Path("runs") / f"{bundle.name}-{model}").absolute()
    if checkpoint is None:
        checkpoint = find_checkpoint(run_dir)
        if checkpoint is None:
            default = bundle.root / "models" / "model.pt"
            if not default.is_file():
                raise CLIError(
                    f"nothing to evaluate: no checkpoint in {run_dir / 'checkpoints'} and no {default}; "
                    "train first (cnf train) or pass --checkpoint."
                )
            checkpoint = default
    checkpoint = Path(checkpoint).absolute()
    check_checkpoint(checkpoint)
    trained = trained_config(run_dir)
    if trained is not None:  # evaluate the model as it was trained (widths, preset, overrides), then evaluate.json
        files = [trained, bundle.config("evaluate", "needed by cnf evaluate")]
        logger.info("evaluating with the run's resolved config %s (--preset/--model are not used)", trained)
    else:
        files = compose_config_files(bundle, "evaluate", preset, model)
    uri = _tracking(tracking_uri)
    extra: dict[str, Any] = {"checkpoint": str(checkpoint), "split": split}
    if num_samples is not None:
        extra["num_samples"] = num_samples
    if temperature is not None:
        extra["temperature"] = temperature
    extra.update(user)
    ovr = _base_overrides(bundle, run_dir, device, uri, experiment, run_name, dataset_dir, extra)
    workflow = make_workflow(bundle, files, {}, workflow_type=None)
    gone = missing_keys(workflow, [k for k in (*CONTRACT_KEYS, "checkpoint", "split") if k in ovr and k not in user])
    if gone:
        logger.warning("bundle %s does not define the contract keys %s; setting them anyway.", bundle.name, gone)
    workflow.parser.update(ovr)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = export_config(workflow, run_dir / f"config_evaluate_{split}.json")
    _run_workflow(workflow, run_dir, EVAL_RUN_ID_FILE)

    result = RunResult(bundle.name, run_dir, files, uri)
    evaluator = None
    for key in ("evaluator", "validate#evaluator", "evaluate#evaluator"):
        evaluator = _parsed(workflow, key)
        if evaluator is not None:
            break
    if evaluator is not None:
        result.metrics.update(_scalar_metrics(evaluator.state.metrics or {}))
    result.info.update(
        {
            "split": split,
            "checkpoint": str(checkpoint),
            "configs": " + ".join(p.name for p in files),
            "resolved config": str(config_path),
            "MLflow run": read_run_id(run_dir, EVAL_RUN_ID_FILE) or "(none stored)",
            "training run": read_run_id(run_dir, RUN_ID_FILE) or "(unknown)",
            "MLflow store": uri,
        }
    )
    return result
