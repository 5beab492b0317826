"""``cnf calibrate``: the CNF and its factored baseline side by side on a split (the paper's Figs. 4 and 6).

:func:`run_calibration` loads both models with :func:`~monai_cnf.bundle.load_trained` (the run folders' resolved
configs when the weights come from ``cnf train`` runs), reads the split's datalist and pad transform from the
bundle, and calls :mod:`monai_cnf.calibration.runner`; the numbers go to an MLflow run linked to the training
run(s), the plots to ``output`` and MLflow.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monai_cnf.bundle.files import BundleError, ModelKind, Workflow, load_bundle
from monai_cnf.bundle.run_folder import CALIBRATION_RUN_ID, RunFolder
from monai_cnf.bundle.workflows import restores_tracking_uri

__all__ = ["CalibrateResult", "run_calibration"]

logger = logging.getLogger(__name__)


@dataclass
class CalibrateResult:
    """What ``cnf calibrate`` reports: metrics, plot files, and where things went."""

    bundle: str
    output: Path
    metrics: dict[str, float] = field(default_factory=dict)
    plots: list[Path] = field(default_factory=list)
    info: dict[str, str] = field(default_factory=dict)
    run_id: str | None = None


def _log_mlflow(
    uri: str,
    experiment: str,
    run_name: str | None,
    tags: Mapping[str, str],
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    artifacts: Sequence[Path],
) -> str:
    """One FINISHED MLflow run with params, metrics, tags and ``artifacts`` (files, under ``calibration/``)."""
    import mlflow
    from mlflow.entities import Metric, Param, RunTag

    from monai_cnf.tracking import artifact_location_for, prepare_store

    prepare_store(uri)  # a new SQLite store is created by one process at a time
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment, artifact_location_for(uri))
    run = client.create_run(exp_id, run_name=run_name or f"calibrate_{time.strftime('%Y%m%d_%H%M%S')}")
    run_id = run.info.run_id
    try:
        now = int(time.time() * 1000)
        client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
            params=[Param(k, str(v)[:6000]) for k, v in params.items()],
            tags=[RunTag(k, str(v)) for k, v in tags.items()],
        )
        for path in artifacts:  # only what this command wrote: --output may hold other files
            client.log_artifact(run_id, str(path), artifact_path="calibration")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


def _log_child_runs(
    uri: str,
    parent_id: str,
    tags: Mapping[str, str],
    children: Sequence[tuple[str, Mapping[str, str], Mapping[str, float], Mapping[str, str]]],
) -> list[str]:
    """Child runs of the calibration run: ``(name suffix, params, metrics, extra tags)`` each, FINISHED."""
    import mlflow
    from mlflow.entities import Metric, Param, RunTag

    client = mlflow.MlflowClient(uri)
    parent = client.get_run(parent_id)
    base = {**{k: v for k, v in tags.items() if k != "mlflow.parentRunId"}, "mlflow.parentRunId": parent_id}
    ids = []
    for suffix, params, metrics, extra in children:
        run = client.create_run(parent.info.experiment_id, run_name=f"{parent.info.run_name} {suffix}")
        now = int(time.time() * 1000)
        client.log_batch(
            run.info.run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
            params=[Param(k, str(v)) for k, v in params.items()],
            tags=[RunTag(k, str(v)) for k, v in {**base, **extra}.items()],
        )
        client.set_terminated(run.info.run_id, "FINISHED")
        ids.append(run.info.run_id)
    return ids


def _model_children(metrics: Mapping[str, float], models: Sequence[str]) -> list[tuple[str, dict, dict, dict]]:
    """One child per model (tag ``model``), its metrics without the ``<model>/`` prefix: CNF vs factored is one
    filter in the MLflow UI (``tags.cnf.mode = 'calibrate-model'``), the same metric names side by side."""
    out = []
    for model in models:
        values = {k[len(model) + 1 :]: v for k, v in metrics.items() if k.startswith(f"{model}/")}
        out.append((f"model={model}", {"model": model}, values, {"model": model, "cnf.mode": "calibrate-model"}))
    return out


def _temperature_children(
    metrics: Mapping[str, float], temperatures: Sequence[float]
) -> list[tuple[str, dict, dict, dict]]:
    """One child per SR temperature (param ``temperature``), the metrics without their ``_t<tau>`` suffix
    (``cnf/psnr_y``, ``factored/ssim_y``, ...): select them in the UI and plot ``cnf/psnr_y`` against
    ``temperature`` (the parent keeps the suffixed summary)."""
    out = []
    for tau in temperatures:
        suffix = f"_t{float(tau):g}"
        values = {k[: -len(suffix)]: v for k, v in metrics.items() if k.endswith(suffix)}
        out.append(
            (f"tau={float(tau):g}", {"temperature": f"{float(tau):g}"}, values, {"cnf.mode": "calibrate-temperature"})
        )
    return out


def _stem(item: Mapping[str, Any]) -> str:
    path = item.get("label") or item.get("image")
    return Path(path).stem if isinstance(path, (str, Path)) else ""


def _write_per_image(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    import csv

    if not rows:
        return
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


@restores_tracking_uri
def _input_transform(parser: Any) -> Any:
    """The whole-image preprocessing a model was trained with beyond loading (``equalize_contrast``: CLAHE), or None."""
    if "equalize_contrast" in parser and parser.get_parsed_content("equalize_contrast"):
        from monai_cnf.transforms import AdaptiveHistogramEqualize

        return AdaptiveHistogramEqualize()
    return None


def run_calibration(
    bundle_path: Path,
    *,
    dataset_dir: Path | None = None,
    split: str = "test",
    cnf_checkpoint: Path | None = None,
    factored_checkpoint: Path | None = None,
    run_dir: Path | None = None,
    factored_run_dir: Path | None = None,
    num_samples: int = 100,
    temperature: float = 1.0,
    chunk_size: int = 4,
    max_images: int | None = None,
    output: Path | None = None,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
    device: str | None = None,
    preset: str = "auto",
    seed: int = 0,
    overrides: Sequence[str] = (),
    progress: bool = True,
) -> CalibrateResult:
    """Calibration of a bundle's CNF against its factored baseline on ``split`` (see ``cnf calibrate --help``)."""
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from monai_cnf.bundle.loading import load_trained, resolve_device
    from monai_cnf.bundle.overrides import parse_overrides
    from monai_cnf.bundle.workflows import _tracking
    from monai_cnf.calibration.runner import SR_TEMPERATURES, calibrate_segmentation, calibrate_super_resolution
    from monai_cnf.tracking import git_commit

    bundle = load_bundle(bundle_path)
    for name, value in (("num_samples", num_samples), ("chunk_size", chunk_size), ("max_images", max_images)):
        if value is not None and value < 1:
            raise BundleError(f"`{name}` must be >= 1, got {value}.")
    if temperature < 0:
        raise BundleError(f"`temperature` must be >= 0, got {temperature}.")
    user = parse_overrides(overrides)
    device = resolve_device(device)
    cnf_dir = RunFolder(Path(run_dir or Path("runs") / f"{bundle.name}-cnf"))
    fac_dir = RunFolder(Path(factored_run_dir or Path("runs") / f"{bundle.name}-factored"))
    output = Path(output or Path("runs") / f"{bundle.name}-calibration-{split}").absolute()
    output.mkdir(parents=True, exist_ok=True)
    uri = _tracking(tracking_uri)
    # data (and a synthetic set, when there is no dataset_dir) live with the CNF's training run, as in training
    from_run = cnf_checkpoint is None and cnf_dir.checkpoint() is not None
    settings: dict[str, Any] = {
        "output_dir": str(cnf_dir.root if from_run else output),
        "split": split,
        "tracking_uri": uri,
    }
    if dataset_dir is not None:
        settings["dataset_dir"] = str(Path(dataset_dir).absolute())
    torch.manual_seed(seed)  # the CNF's dequantization noise in bits/dim
    loaded = {}
    choices = ((ModelKind.cnf, cnf_dir, cnf_checkpoint), (ModelKind.factored, fac_dir, factored_checkpoint))
    for kind, folder, ckpt in choices:
        trained = load_trained(bundle, folder.root, ckpt, None if preset == "auto" else preset, device, kind,
                               Workflow.evaluate, settings, user)  # fmt: skip
        loaded[kind.value] = trained
    cnf, fac = loaded["cnf"], loaded["factored"]
    cnf_wf, fac_wf = cnf, fac  # each has .parser
    models = {name: t.network for name, t in loaded.items()}
    cnf_net = cnf.network
    task = cnf_net.task.value

    columns = (
        TextColumn("{task.description:>8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    window: dict[str, Any] = {}  # the bundle's sliding-window settings (segmentation)
    with Progress(*columns, console=Console(stderr=True), disable=not progress, transient=False) as bar:
        if task == "segmentation":
            datalist = list(cnf_wf.parser.get_parsed_content("validate#datalist"))
            if not datalist:
                raise BundleError(f"the {split} split of {dataset_dir or 'the synthetic set'} has no images.")
            datalist = datalist[:max_images] if max_images else datalist
            if split == "test" and "label2" not in datalist[0]:
                logger.warning("the %s split has no 2nd observer: no observer2 metrics or scatter points.", split)
            pad = cnf_wf.parser.get_parsed_content("pad_transform") if "pad_transform" in cnf_wf.parser else None
            # each model's own sliding windows (DRIVE CPU preset: the CNF in 96 x 96 windows, the factored baseline on
            # whole images), so the analysis sees what each model's inference gives
            from monai_cnf.engines import sliding_window_settings

            window = {name: sliding_window_settings(wf.parser) for name, wf in (("cnf", cnf_wf), ("factored", fac_wf))}
            report = calibrate_segmentation(
                datalist, models, output, num_samples, temperature, chunk_size, pad, device, seed, bar,
                roi_size={name: w["roi_size"] for name, w in window.items()},
                overlap=window["cnf"]["overlap"], sw_batch_size=window["cnf"]["sw_batch_size"],
                input_transforms={name: _input_transform(wf.parser) for name, wf in loaded.items()},
            )  # fmt: skip
            n_images = len(datalist)
        else:
            # the bundle's evaluation pairs (HR crop, MATLAB-bicubic LR), transformed one at a time
            datalist = list(cnf_wf.parser.get_parsed_content("validate#datalist"))
            datalist = datalist[:max_images] if max_images else datalist
            if not datalist:
                raise BundleError(f"the {split} split has no images (set -o eval_dir=<folder> for a test set).")
            transform = cnf_wf.parser.get_parsed_content("validate#preprocessing")
            items = ({**transform(dict(d)), "name": _stem(d)} for d in datalist)
            scale = int(getattr(cnf_net, "scale", 2))
            report = calibrate_super_resolution(items, models, output, SR_TEMPERATURES, scale, device, seed, bar)
            n_images = len(datalist)
    table = output / "per_image.csv"
    _write_per_image(report.per_image, table)

    cnf_run = cnf_dir.mlflow_run_id() if cnf.provenance.run_dir is not None else None
    fac_run = fac_dir.mlflow_run_id() if fac.provenance.run_dir is not None else None
    tags: dict[str, str] = {"bundle": bundle.name, "cnf.mode": "calibrate", "model": "cnf+factored", "split": split}
    if cnf_run:
        tags.update({"mlflow.parentRunId": cnf_run, "cnf.training_run_id": cnf_run})
    if fac_run:
        tags["cnf.factored_training_run_id"] = fac_run
    if not (cnf_run or fac_run):
        logger.warning("no training run to link the calibration run to (weights not from a `cnf train` run folder).")
    commit = git_commit(Path(__file__).parent) or git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    params = {
        "task": task,
        "split": split,
        "num_images": n_images,
        "num_samples": num_samples if task == "segmentation" else 1,
        "temperature": temperature if task == "segmentation" else ",".join(f"{t:g}" for t in SR_TEMPERATURES),
        "chunk_size": chunk_size,
        "roi_size": ", ".join(f"{k}: {w['roi_size'] or 'whole image'}" for k, w in window.items()) or "n/a",
        "seed": seed,
        "device": device,
        "preset": f"cnf {cnf.provenance.preset}, factored {fac.provenance.preset}",
        "cnf_checkpoint": cnf.provenance.checkpoint,
        "factored_checkpoint": fac.provenance.checkpoint,
        "cnf_configs": " + ".join(str(p) for p in cnf.files),
        "factored_configs": " + ".join(str(p) for p in fac.files),
        "dataset_dir": dataset_dir or "synthetic (bundle default)",
    }
    files = [*report.plots, *([table] if table.is_file() else [])]
    run_id = _log_mlflow(uri, experiment or bundle.name, run_name, tags, params, report.metrics, files)
    children = _model_children(report.metrics, ("cnf", "factored"))
    if task != "segmentation":
        children += _temperature_children(report.metrics, SR_TEMPERATURES)
    _log_child_runs(uri, run_id, tags, children)
    RunFolder(output).write_mlflow_run_id(run_id, CALIBRATION_RUN_ID)

    result = CalibrateResult(bundle.name, output, dict(report.metrics), list(report.plots), run_id=run_id)
    result.info.update(
        {
            "split / images": f"{split} / {n_images}",
            "samples / temperature": (
                f"{num_samples} / {temperature:g}"
                if task == "segmentation"
                else f"1 per temperature, tau in {', '.join(f'{t:g}' for t in SR_TEMPERATURES)}"
            ),
            "CNF weights": str(cnf.provenance.checkpoint),
            "factored weights": str(fac.provenance.checkpoint),
            "plots": f"{len(report.plots)} PNG in {output}",
            "MLflow run": run_id,
            "training runs": f"cnf {cnf_run or '(none)'}, factored {fac_run or '(none)'}",
            "MLflow store": uri,
        }
    )
    return result
