"""``cnf train`` / ``cnf evaluate``: run a bundle's ConfigWorkflow with the contract's overrides.

The bundle does the work (``initialize``, ``run``, ``finalize`` of ``monai.bundle.ConfigWorkflow``); this module
chooses the config files and overrides, protects what a run folder already holds, and collects the results.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from monai_cnf.bundle.files import Bundle, BundleError, ModelKind, Preset, Workflow, load_bundle
from monai_cnf.bundle.overrides import check_overrides, parse_overrides
from monai_cnf.bundle.run_folder import EVAL_RUN_ID, RUN_ID, TRAIN_CONFIG, RunFolder

__all__ = ["CONTRACT_KEYS", "RunResult", "export_config", "make_workflow", "run_evaluation", "run_training"]

logger = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

#: Top-level keys of train.json / evaluate.json that the CLI sets (bundle_cli_contract.md).
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
    "init_weights",
)


@dataclass
class RunResult:
    """What a ``cnf train`` / ``cnf evaluate`` run reports."""

    bundle: str
    run_dir: Path
    config_files: list[Path]
    tracking_uri: str
    metrics: dict[str, float] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)


def make_workflow(
    bundle: Bundle,
    config_files: Sequence[Path],
    settings: Mapping[str, Any],
    user: Mapping[str, Any],
    workflow_type: str | None = None,
) -> Any:
    """A ``monai.bundle.ConfigWorkflow`` over ``config_files``: the user's overrides are checked against the merged
    config first (:func:`~monai_cnf.bundle.check_overrides`), then ``settings`` and them are applied."""
    from monai.bundle import ConfigWorkflow

    quiet = logging.getLogger("monai.bundle.workflows")  # "Logging file is set to False" is not news
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        workflow = ConfigWorkflow(
            config_file=[str(p) for p in config_files],
            meta_file=str(bundle.metadata_file),
            logging_file=False,
            workflow_type=workflow_type,
        )
    finally:
        quiet.setLevel(level)
    check_overrides(workflow.parser.get(), user, source=" + ".join(p.name for p in config_files))
    gone = [k for k in settings if k in CONTRACT_KEYS and k not in workflow.parser]
    if gone:
        logger.warning("bundle %s does not define the contract keys %s; setting them anyway.", bundle.name, gone)
    workflow.parser.update({**dict(settings), **dict(user)})
    return workflow


def export_config(workflow: Any, path: Path) -> Path:
    """Write the merged, overridden config (MONAI's "executed config") as JSON."""
    from monai.bundle import ConfigParser

    path.parent.mkdir(parents=True, exist_ok=True)
    ConfigParser.export_config_file(workflow.parser.get(), str(path), indent=2)
    return path


def _tracking(tracking_uri: str | None) -> str:
    """Resolve the store and set ``MLFLOW_TRACKING_URI`` to it for the command that calls this (see
    :func:`restores_tracking_uri`, which gives the caller its own value back)."""
    from monai_cnf.tracking.utils import resolve_tracking_uri, sqlite_path

    uri = resolve_tracking_uri(tracking_uri)
    db = sqlite_path(uri)
    if db is not None:
        # only the folder: the store itself is opened (monai_cnf.tracking.prepare_store) by the handler or the
        # calibration run, after the command's checks, so a refused command leaves no database behind
        db.parent.mkdir(parents=True, exist_ok=True)
    # MONAI's MLFlowHandler prefers the environment variable over its argument: make both agree.
    os.environ["MLFLOW_TRACKING_URI"] = uri
    return uri


def restores_tracking_uri(command: Callable[P, R]) -> Callable[P, R]:
    """A command that sets ``MLFLOW_TRACKING_URI`` for its run (:func:`_tracking`) leaves the process as it found
    it: a caller in the same process (a notebook, a test, MONAI Label) keeps its own variable, or none, and a later
    bundle run with an explicit ``tracking_uri`` is not sent to this command's store."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        before = os.environ.get("MLFLOW_TRACKING_URI")
        try:
            return command(*args, **kwargs)
        finally:
            if before is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = before

    return wrapper


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


def _protocol(workflow: Any) -> dict[str, str]:
    """What the numbers are: the prediction scored (one sample or a mean of samples, at which temperature) and
    the bundle's ``metric_notes`` (e.g. what each bits/dim counts), for the results table."""
    n, t = _parsed(workflow, "num_samples"), _parsed(workflow, "temperature")
    info: dict[str, str] = {}
    if n is not None and t is not None:
        kind = "one sample" if int(n) == 1 else f"mean of {int(n)} samples"
        # a model with closed-form moments (the factored Bernoulli at t = 1) is scored on its exact mean, not on N draws
        inferer, network = _parsed(workflow, "validate#inferer"), _parsed(workflow, "network")
        has_moments = getattr(network, "has_exact_moments", None)
        if getattr(inferer, "exact_mean", False) and callable(has_moments) and has_moments(float(t)):
            kind = "exact mean of its samples (closed form)"
        info["prediction scored"] = f"{kind} at temperature {float(t):g}"
    notes = _parsed(workflow, "metric_notes") or {}
    info.update({f"{name} protocol": str(note) for name, note in notes.items()})
    return info


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
    run_id = RunFolder(run_dir).mlflow_run_id(run_id_file)
    if run_id is None:
        return
    try:
        import mlflow

        client = mlflow.MlflowClient()
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, status)
    except Exception:  # best effort: the store may be what failed
        logger.debug("could not mark MLflow run %s %s", run_id, status, exc_info=True)


def default_run_dir(bundle_name: str, model: str, run_dir: Path | None) -> Path:
    """``run_dir``, else ``runs/<bundle>-<model>``, absolute.

    Example:
        >>> default_run_dir("drive_vessel", "cnf", None).name
        'drive_vessel-cnf'
    """
    return Path(run_dir or Path("runs") / f"{bundle_name}-{model}").absolute()


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """A fresh training never writes into a run folder holding checkpoints; ``resume`` needs one to resume."""
    run = RunFolder(run_dir)
    existing = run.checkpoints()
    if existing and not resume:
        raise BundleError(
            f"run folder {run.root} already holds {len(existing)} checkpoint(s) (e.g. {existing[-1].name}); "
            "pass `resume` to continue that run or choose another `run_dir` (nothing was changed)."
        )
    if resume and run.resumable() is None:
        raise BundleError(
            f"`resume`: no checkpoint in {run.root / 'checkpoints'} to resume from; train without `resume`."
        )


@restores_tracking_uri
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
    init_weights: Path | None = None,
) -> RunResult:
    """Train a bundle: ``train.json`` + preset + model overlays, run folder protected, tracked in MLflow.

    Overrides are checked before anything runs; the run folder records the resolved config
    (:meth:`RunFolder.next_config`) and the bundle, preset and model (:meth:`RunFolder.write_provenance`).
    In a process started by ``torchrun`` (``cnf train --nproc-per-node N``), the bundle's ``multi_gpu_train.json``
    is merged last; rank 0 alone writes the resolved config (without that overlay, so the run folder evaluates and
    resumes in one process too), the provenance, checkpoints and MLflow. ``init_weights`` starts a new run from
    trained weights (network only: fresh optimizer, schedule and epoch count), e.g. the bundle's ``models/model.pt``.
    """
    from monai_cnf.bundle.loading import load_weights, resolve_device

    bundle = load_bundle(bundle_path)
    user = parse_overrides(overrides)
    device = resolve_device(device)
    chosen = Preset(preset).resolve(device)
    if max_epochs is not None and max_epochs < 1:
        raise BundleError(f"`max_epochs` must be >= 1, got {max_epochs}.")
    if init_weights is not None:
        if resume:
            raise BundleError(
                "`init_weights` starts a new run from weights and `resume` continues a run from its own checkpoint: "
                "pass one of them."
            )
        init_weights = Path(init_weights).absolute()
    run = RunFolder(default_run_dir(bundle.name, model, run_dir))
    check_run_dir(run.root, resume)
    record = bundle.config_files(Workflow.train, chosen, model)
    distributed = "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ  # started by torchrun
    files = [*record, bundle.config("multi_gpu_train", "needed by --nproc-per-node")] if distributed else record
    main = int(os.environ.get("RANK", "0")) == 0  # torchrun's global rank
    uri = _tracking(tracking_uri)
    extra: dict[str, Any] = {"resume": resume}
    if max_epochs is not None:
        extra["max_epochs"] = max_epochs
    if amp:
        extra["amp"] = True
    if init_weights is not None:
        extra["init_weights"] = str(init_weights)
    elif resume:  # a resumed run keeps the record of the weights it started from (and its MLflow param)
        first = run.root / TRAIN_CONFIG
        started_from = json.loads(first.read_text()).get("init_weights") if first.is_file() else None
        if started_from is not None:
            extra["init_weights"] = started_from
    settings = _base_overrides(bundle, run.root, device, uri, experiment, run_name, dataset_dir, extra)
    workflow = make_workflow(bundle, files, settings, user, workflow_type="train")
    recorded = make_workflow(bundle, record, settings, user, workflow_type="train") if distributed else workflow
    if init_weights is not None:  # before a run folder or an MLflow run exists
        load_weights(
            recorded.parser.get_parsed_content("network_def"),
            init_weights,
            source=f"{bundle.name} ({chosen.value} preset, {ModelKind(model).value})",
            name=f"`init_weights` {init_weights}",
            fix="choose the `preset` and `model` that made them",
        )
    config_path = run.root / "config.json"
    if main:
        config_path = export_config(recorded, run.next_config())
        run.write_provenance(bundle=bundle.name, preset=chosen.value, model=ModelKind(model).value)
    _run_workflow(workflow, run.root, RUN_ID if main else None)

    result = RunResult(bundle.name, run.root, files, uri)
    trainer = _parsed(workflow, "train#trainer")
    if trainer is not None:
        state = trainer.state
        result.info.update({"epochs": f"{state.epoch}/{state.max_epochs}", "iterations": str(state.iteration)})
        result.metrics.update({f"train_{k}": v for k, v in _scalar_metrics(state.metrics or {}).items()})
        out = state.output
        out = out[0] if isinstance(out, list) and out else out
        if isinstance(out, Mapping) and "loss" in out:
            result.metrics["train_loss (last)"] = float(out["loss"])
    evaluator = _parsed(workflow, "validate#evaluator")
    if evaluator is not None:
        result.metrics.update(_scalar_metrics(evaluator.state.metrics or {}))
    best = run.key_metric()
    if best is not None and best.get("best_metric") is not None:
        result.metrics["best_metric"] = float(best["best_metric"])
    if distributed:
        result.info["processes"] = os.environ.get("WORLD_SIZE", "1")
    result.info.update(
        {
            "preset / model": f"{chosen.value} / {model}",
            "configs": " + ".join(p.name for p in files),
            "checkpoints": str(run.root / "checkpoints"),
            "weights (best / final)": str(run.checkpoint() or "(none)"),
            "resolved config": str(config_path),
            "MLflow run": run.mlflow_run_id() or "(none stored)",
            "MLflow store": uri,
        }
    )
    return result


@restores_tracking_uri
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
    """Evaluate weights on a split with the bundle's metrics; an MLflow run linked to the training run.

    The network is built and its weights loaded by :func:`~monai_cnf.bundle.load_trained` (the run folder's
    resolved config + ``evaluate.json`` when the weights come from a ``cnf train`` run), so weights that do not fit
    fail in one line before the evaluation starts.
    """
    from monai_cnf.bundle.loading import load_trained, resolve_device

    bundle = load_bundle(bundle_path)
    user = parse_overrides(overrides)
    device = resolve_device(device)
    run = RunFolder(Path(run_dir or Path("runs") / f"{bundle.name}-{model}"))
    uri = _tracking(tracking_uri)
    extra: dict[str, Any] = {"split": split}
    if num_samples is not None:
        extra["num_samples"] = num_samples
    if temperature is not None:
        extra["temperature"] = temperature
    settings = _base_overrides(bundle, run.root, device, uri, experiment, run_name, dataset_dir, extra)
    trained = load_trained(
        bundle, run.root, checkpoint, None if preset == "auto" else preset, device, model, Workflow.evaluate,
        {k: v for k, v in settings.items() if k in ("bundle_root", "device")}, user,
    )  # fmt: skip
    files = trained.files
    settings["checkpoint"] = str(trained.provenance.checkpoint)
    workflow = make_workflow(bundle, files, settings, user)
    run.root.mkdir(parents=True, exist_ok=True)
    config_path = export_config(workflow, run.root / f"config_evaluate_{split}.json")
    _run_workflow(workflow, run.root, EVAL_RUN_ID)

    result = RunResult(bundle.name, run.root, files, uri)
    for key in ("evaluator", "validate#evaluator", "evaluate#evaluator"):
        evaluator = _parsed(workflow, key)
        if evaluator is not None:
            result.metrics.update(_scalar_metrics(evaluator.state.metrics or {}))
            break
    result.info.update(
        {
            "split": split,
            **_protocol(workflow),
            **trained.provenance.describe(),
            "configs": " + ".join(p.name for p in files),
            "resolved config": str(config_path),
            "MLflow run": run.mlflow_run_id(EVAL_RUN_ID) or "(none stored)",
            "training run": run.mlflow_run_id(RUN_ID) or "(unknown)",
            "MLflow store": uri,
        }
    )
    return result
