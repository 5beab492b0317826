"""``cnf calibrate``: the CNF and its factored baseline side by side on a split (the paper's Figs. 4 and 6).

The command body only parses options; :func:`run_calibration` builds both networks from the bundle's configs (the
run folders' resolved ``config.json`` when the weights come from a ``cnf train`` run), loads their weights, reads
the split's datalist and pad transform from the bundle, and calls :mod:`monai_cnf.calibration.runner`; the numbers
go to an MLflow run linked to the training run(s) and to a Rich table, the plots to ``--output`` and MLflow.

Registered in ``cli/main.py`` with ``app.command(rich_help_panel="Run")(calibrate)``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from monai_cnf.cli._bundle import (
    Bundle,
    compose_config_files,
    load_bundle,
    make_workflow,
    parse_overrides,
    resolve_device,
    resolve_preset,
)
from monai_cnf.cli._errors import STATE, CLIError, handle_errors, setup_logging

__all__ = ["CalibrateResult", "calibrate", "run_calibration"]

logger = logging.getLogger("monai_cnf.cli")

CALIBRATION_RUN_ID_FILE = "mlflow_calibration_run_id"
#: Default weights shipped in a bundle's ``models/`` folder, per model kind.
BUNDLE_WEIGHTS = {"cnf": "model.pt", "factored": "model_factored.pt"}
_PANEL_DATA, _PANEL_RUN, _PANEL_SAMPLING, _PANEL_TRACK = "Data", "Run", "Sampling", "Tracking"


class _Preset(str, Enum):
    auto = "auto"
    cpu = "cpu"
    paper = "paper"


class _Split(str, Enum):
    test = "test"
    validation = "validation"
    training = "training"


@dataclass
class CalibrateResult:
    """What ``cnf calibrate`` reports: metrics, plot files, and where things went."""

    bundle: str
    output: Path
    metrics: dict[str, float] = field(default_factory=dict)
    plots: list[Path] = field(default_factory=list)
    info: dict[str, str] = field(default_factory=dict)
    run_id: str | None = None


@dataclass
class _Model:
    kind: str
    checkpoint: Path
    run_dir: Path | None  # the training run folder the weights come from (None: bundle weights / explicit file)
    config_files: list[Path]


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _resolve_model(
    bundle: Bundle, kind: str, checkpoint: Path | None, run_dir: Path, preset: str, option: str, run_option: str
) -> _Model:
    """Weights and configs of one model: ``checkpoint``, else ``run_dir``'s best/latest, else the bundle's file."""
    from monai_cnf.cli._run import check_checkpoint, find_checkpoint, trained_config

    train_cmd = f"cnf train {bundle.root}{' --model factored' if kind == 'factored' else ''} --run-dir {run_dir}"
    if checkpoint is not None:
        checkpoint = Path(checkpoint).expanduser().absolute()
        if not checkpoint.is_file():
            raise CLIError(f"{option} {checkpoint} does not exist; create it with `{train_cmd}` or fix the path.")
    else:
        found = find_checkpoint(run_dir) if run_dir.is_dir() else None
        shipped = bundle.root / "models" / BUNDLE_WEIGHTS[kind]
        if found is None and not shipped.is_file():
            raise CLIError(
                f"no {kind} weights: no checkpoint in {run_dir / 'models'} or {run_dir / 'checkpoints'} "
                f"(the {run_option} run folder) and no {shipped}; create them with `{train_cmd}` or pass {option}."
            )
        checkpoint = (found or shipped).absolute()
    check_checkpoint(checkpoint)
    from_run = run_dir.is_dir() and _inside(checkpoint, run_dir)
    trained = trained_config(run_dir)
    if from_run and trained is not None:  # build the network as it was trained (widths, preset, overrides)
        try:
            model_kind = json.loads(trained.read_text()).get("model_kind", kind)
        except (OSError, json.JSONDecodeError) as err:
            raise CLIError(f"{trained} is not a readable resolved config ({err}); re-run `{train_cmd}`.") from None
        if model_kind != kind:
            raise CLIError(
                f"{run_option} {run_dir} holds a {model_kind!r} training run, not a {kind!r} one; pass it as "
                f"{'--factored-run-dir' if model_kind == 'factored' else '--run-dir'} instead."
            )
        files = [trained, bundle.config("evaluate", "needed by cnf calibrate")]
    else:
        files = compose_config_files(bundle, "evaluate", preset, kind)
    return _Model(kind, checkpoint, run_dir if from_run else None, files)


def _state_dict(obj: Any) -> Mapping[str, Any]:
    from monai_cnf.cli._sample import _state_dict as plain  # F's reading of model.pt vs trainer checkpoints

    return plain(obj)


def _build(bundle: Bundle, model: _Model, ovr: Mapping[str, Any], device: str) -> tuple[Any, Any]:
    """(workflow, network in eval mode with the weights loaded)."""
    import torch

    from monai_cnf.engines import load_checkpoint

    workflow = make_workflow(bundle, model.config_files, {}, workflow_type=None)
    workflow.parser.update(dict(ovr))
    network = workflow.parser.get_parsed_content("network_def", instantiate=True)
    if not isinstance(network, torch.nn.Module):
        raise CLIError(f"network_def of {' + '.join(p.name for p in model.config_files)} is not a torch module.")
    state = _state_dict(load_checkpoint(model.checkpoint, map_location="cpu"))
    try:
        network.load_state_dict(state)
    except RuntimeError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()][:3]
        raise CLIError(
            f"{model.checkpoint} does not fit the {model.kind} network of "
            f"{' + '.join(p.name for p in model.config_files)} ({' '.join(lines)}); pass the run folder it was "
            "trained in (its config.json has the widths) or the same --preset/--override as for training."
        ) from None
    return workflow, network.to(torch.device(device)).eval()


def _task(workflow: Any) -> str:
    """``"segmentation"`` (binary labels) or ``"super_resolution"`` (8-bit targets) from the CNF's network_def."""
    deq = workflow.parser.get("network_def#dequantization", "binary") if "network_def" in workflow.parser else "binary"
    return "super_resolution" if deq == "uniform" else "segmentation"


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

    from monai_cnf.tracking import artifact_location_for

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
    from monai_cnf.cli._run import _tracking
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from monai_cnf.calibration.runner import SR_TEMPERATURES, calibrate_segmentation, calibrate_super_resolution
    from monai_cnf.tracking import git_commit, read_run_id

    bundle = load_bundle(bundle_path)
    if num_samples < 1:
        raise CLIError(f"--num-samples must be >= 1, got {num_samples}.")
    if chunk_size < 1:
        raise CLIError(f"--chunk-size must be >= 1, got {chunk_size}.")
    if temperature < 0:
        raise CLIError(f"--temperature must be >= 0, got {temperature}.")
    if max_images is not None and max_images < 1:
        raise CLIError(f"--max-images must be >= 1, got {max_images}.")
    user = parse_overrides(overrides)
    device = resolve_device(device)
    preset = resolve_preset(preset, device)
    cnf_dir = Path(run_dir or Path("runs") / f"{bundle.name}-cnf").absolute()
    fac_dir = Path(factored_run_dir or Path("runs") / f"{bundle.name}-factored").absolute()
    cnf = _resolve_model(bundle, "cnf", cnf_checkpoint, cnf_dir, preset, "--cnf-checkpoint", "--run-dir")
    fac = _resolve_model(
        bundle, "factored", factored_checkpoint, fac_dir, preset, "--factored-checkpoint", "--factored-run-dir"
    )
    output = Path(output or Path("runs") / f"{bundle.name}-calibration-{split}").absolute()
    output.mkdir(parents=True, exist_ok=True)
    uri = _tracking(tracking_uri)
    # data (and a synthetic set, when there is no dataset_dir) live with the CNF's training run, as in training
    data_dir = cnf.run_dir or output
    ovr: dict[str, Any] = {
        "bundle_root": str(bundle.root),
        "output_dir": str(data_dir),
        "device": device,
        "split": split,
        "tracking_uri": uri,
    }
    if dataset_dir is not None:
        ovr["dataset_dir"] = str(Path(dataset_dir).absolute())
    ovr.update(user)
    torch.manual_seed(seed)  # the CNF's dequantization noise in bits/dim
    cnf_wf, cnf_net = _build(bundle, cnf, ovr, device)
    fac_wf, fac_net = _build(bundle, fac, ovr, device)
    models = {"cnf": cnf_net, "factored": fac_net}
    task = _task(cnf_wf)

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
                raise CLIError(f"the {split} split of {dataset_dir or 'the synthetic set'} has no images.")
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
            )  # fmt: skip
            n_images = len(datalist)
        else:
            # the bundle's evaluation pairs (HR crop, MATLAB-bicubic LR), transformed one at a time
            datalist = list(cnf_wf.parser.get_parsed_content("validate#datalist"))
            datalist = datalist[:max_images] if max_images else datalist
            if not datalist:
                raise CLIError(f"the {split} split has no images (set -o eval_dir=<folder> for a test set).")
            transform = cnf_wf.parser.get_parsed_content("validate#preprocessing")
            items = ({**transform(dict(d)), "name": _stem(d)} for d in datalist)
            scale = int(getattr(cnf_net, "scale", 2))
            report = calibrate_super_resolution(items, models, output, SR_TEMPERATURES, scale, device, seed, bar)
            n_images = len(datalist)
    table = output / "per_image.csv"
    _write_per_image(report.per_image, table)

    cnf_run = read_run_id(cnf.run_dir) if cnf.run_dir is not None else None
    fac_run = read_run_id(fac.run_dir) if fac.run_dir is not None else None
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
        "preset": preset,
        "cnf_checkpoint": cnf.checkpoint,
        "factored_checkpoint": fac.checkpoint,
        "cnf_configs": " + ".join(str(p) for p in cnf.config_files),
        "factored_configs": " + ".join(str(p) for p in fac.config_files),
        "dataset_dir": dataset_dir or "synthetic (bundle default)",
    }
    files = [*report.plots, *([table] if table.is_file() else [])]
    run_id = _log_mlflow(uri, experiment or bundle.name, run_name, tags, params, report.metrics, files)
    (output / CALIBRATION_RUN_ID_FILE).write_text(run_id + "\n")

    result = CalibrateResult(bundle.name, output, dict(report.metrics), list(report.plots), run_id=run_id)
    result.info.update(
        {
            "split / images": f"{split} / {n_images}",
            "samples / temperature": (
                f"{num_samples} / {temperature:g}"
                if task == "segmentation"
                else f"1 per temperature, tau in {', '.join(f'{t:g}' for t in SR_TEMPERATURES)}"
            ),
            "CNF weights": str(cnf.checkpoint),
            "factored weights": str(fac.checkpoint),
            "plots": f"{len(report.plots)} PNG in {output}",
            "MLflow run": run_id,
            "training runs": f"cnf {cnf_run or '(none)'}, factored {fac_run or '(none)'}",
            "MLflow store": uri,
        }
    )
    return result


def _table(result: CalibrateResult) -> None:
    """Metrics as rows, models as columns (``cnf``, ``factored``, ``observer2``), then the run information."""
    from rich.console import Console
    from rich.table import Table

    models: list[str] = []
    names: list[str] = []
    for key in result.metrics:
        model, _, name = key.partition("/")
        models += [model] if model not in models else []
        names += [name] if name not in names else []
    table = Table(title=f"cnf calibrate {result.bundle}", header_style="bold")
    table.add_column("metric")
    for m in models:
        table.add_column(m, justify="right")
    for name in names:
        cells = [result.metrics.get(f"{m}/{name}") for m in models]
        table.add_row(name, *("" if v is None else f"{v:.4g}" for v in cells))
    info = Table(show_header=False)
    info.add_column("item")
    info.add_column("value", overflow="fold")
    for k, v in result.info.items():
        info.add_row(k, v)
    console = Console()
    console.print(table)
    console.print(info)


@handle_errors
def calibrate(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder, e.g. bundles/drive_vessel.", show_default=False)],
    dataset_dir: Annotated[
        Path | None,
        typer.Option(
            help="Dataset folder (e.g. DRIVE). Default: the bundle's default (synthetic retina set).",
            exists=True,
            file_okay=False,
            rich_help_panel=_PANEL_DATA,
        ),
    ] = None,
    split: Annotated[_Split, typer.Option(help="Dataset split.", rich_help_panel=_PANEL_DATA)] = _Split.test,
    max_images: Annotated[
        int | None, typer.Option(help="Use only the first N images of the split.", rich_help_panel=_PANEL_DATA)
    ] = None,
    cnf_checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="CNF weights. Default: --run-dir's best/latest, else models/model.pt.",
            dir_okay=False,
            rich_help_panel=_PANEL_RUN,
        ),
    ] = None,
    factored_checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="Factored-baseline weights. Default: --factored-run-dir's best/latest, else models/model_factored.pt.",
            dir_okay=False,
            rich_help_panel=_PANEL_RUN,
        ),
    ] = None,
    run_dir: Annotated[
        Path | None,
        typer.Option(help="The CNF's training run folder. Default: runs/<bundle>-cnf.", rich_help_panel=_PANEL_RUN),
    ] = None,
    factored_run_dir: Annotated[
        Path | None,
        typer.Option(
            help="The factored baseline's run folder. Default: runs/<bundle>-factored.", rich_help_panel=_PANEL_RUN
        ),
    ] = None,
    num_samples: Annotated[
        int, typer.Option(help="Samples per image and model.", rich_help_panel=_PANEL_SAMPLING)
    ] = 100,
    temperature: Annotated[
        float, typer.Option(help="CNF sampling temperature (DRIVE).", rich_help_panel=_PANEL_SAMPLING)
    ] = 1.0,
    chunk_size: Annotated[
        int, typer.Option(help="CNF samples per flow pass (memory bound).", rich_help_panel=_PANEL_SAMPLING)
    ] = 4,
    seed: Annotated[int, typer.Option(help="Random seed.", rich_help_panel=_PANEL_SAMPLING)] = 0,
    output: Annotated[
        Path | None,
        typer.Option(
            help="Folder for the PNG plots and per_image.csv. Default: runs/<bundle>-calibration-<split>.",
            file_okay=False,
            rich_help_panel=_PANEL_RUN,
        ),
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="cpu, cuda or cuda:N. Default: cuda when available.", rich_help_panel=_PANEL_RUN)
    ] = None,
    preset: Annotated[
        _Preset, typer.Option(help="Config preset for weights outside a run folder.", rich_help_panel=_PANEL_RUN)
    ] = _Preset.auto,
    override: Annotated[
        list[str] | None,
        typer.Option(
            "--override",
            "-o",
            help="key=value config override for both models (repeatable).",
            rich_help_panel=_PANEL_RUN,
        ),
    ] = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            help="MLflow store. Default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlruns.db.",
            rich_help_panel=_PANEL_TRACK,
        ),
    ] = None,
    experiment: Annotated[
        str | None, typer.Option(help="MLflow experiment. Default: the bundle name.", rich_help_panel=_PANEL_TRACK)
    ] = None,
    run_name: Annotated[str | None, typer.Option(help="MLflow run name.", rich_help_panel=_PANEL_TRACK)] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Compare the CNF with its factored baseline on a split: calibration plots and numbers, tracked in MLflow.

    DRIVE: PR curves (max F), PR-space scatter with the 2nd observer, reliability + ECE, GED, HM-IoU, bits/dim.
    SR: PSNR/SSIM on Y over the temperature sweep 0, 0.5, 0.8, 1, with sweep grids.
    PNGs go to --output and to an MLflow run linked to the training runs. SR test sets: -o eval_dir=FOLDER.
    """
    setup_logging(STATE["verbose"])
    result = run_calibration(
        bundle,
        dataset_dir=dataset_dir,
        split=split.value,
        cnf_checkpoint=cnf_checkpoint,
        factored_checkpoint=factored_checkpoint,
        run_dir=run_dir,
        factored_run_dir=factored_run_dir,
        num_samples=num_samples,
        temperature=temperature,
        chunk_size=chunk_size,
        max_images=max_images,
        output=output,
        tracking_uri=tracking_uri,
        experiment=experiment,
        run_name=run_name,
        device=device,
        preset=preset.value,
        seed=seed,
        overrides=override or [],
        progress=progress,
    )
    _table(result)
