"""``cnf calibrate``: the CNF and its factored baseline side by side on a split (the paper's Figs. 4 and 6).

Options -> :func:`monai_cnf.bundle.calibrate.run_calibration` -> a Rich table. Registered in ``cli/main.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from monai_cnf.cli._errors import STATE, handle_errors, setup_logging
from monai_cnf.cli._options import BundleArg, DatasetDir, Device, Experiment, Override, PresetOpt, RunName, TrackingUri

from monai_cnf.bundle.files import Preset, Split

__all__ = ["calibrate"]

_RUN, _SAMPLING = "Run", "Sampling"


def _table(result) -> None:  # a monai_cnf.bundle.calibrate.CalibrateResult
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
    bundle: BundleArg,
    dataset_dir: DatasetDir = None,
    split: Annotated[Split, typer.Option(help="Dataset split.", rich_help_panel="Data")] = Split.test,
    max_images: Annotated[
        int | None, typer.Option(help="Use only the first N images of the split.", rich_help_panel="Data")
    ] = None,
    cnf_checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="CNF weights. Default: --run-dir's best/latest, else models/model.pt.",
            dir_okay=False,
            rich_help_panel=_RUN,
        ),
    ] = None,
    factored_checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="Factored-baseline weights. Default: --factored-run-dir's best/latest, else models/model_factored.pt.",
            dir_okay=False,
            rich_help_panel=_RUN,
        ),
    ] = None,
    run_dir: Annotated[
        Path | None,
        typer.Option(help="The CNF's training run folder. Default: runs/<bundle>-cnf.", rich_help_panel=_RUN),
    ] = None,
    factored_run_dir: Annotated[
        Path | None,
        typer.Option(help="The factored baseline's run folder. Default: runs/<bundle>-factored.", rich_help_panel=_RUN),
    ] = None,
    num_samples: Annotated[int, typer.Option(help="Samples per image and model.", rich_help_panel=_SAMPLING)] = 100,
    temperature: Annotated[
        float, typer.Option(help="CNF sampling temperature (DRIVE).", rich_help_panel=_SAMPLING)
    ] = 1.0,
    chunk_size: Annotated[
        int, typer.Option(help="CNF samples per flow pass (memory bound).", rich_help_panel=_SAMPLING)
    ] = 4,
    seed: Annotated[int, typer.Option(help="Random seed.", rich_help_panel=_SAMPLING)] = 0,
    output: Annotated[
        Path | None,
        typer.Option(
            help="Folder for the PNG plots and per_image.csv. Default: runs/<bundle>-calibration-<split>.",
            file_okay=False,
            rich_help_panel=_RUN,
        ),
    ] = None,
    device: Device = None,
    preset: PresetOpt = Preset.auto,
    override: Override = None,
    tracking_uri: TrackingUri = None,
    experiment: Experiment = None,
    run_name: RunName = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Compare the CNF with its factored baseline on a split: calibration plots and numbers, tracked in MLflow.

    DRIVE: PR curves (max F), PR-space scatter with the 2nd observer, reliability + ECE, GED, HM-IoU, bits/dim.
    SR: PSNR/SSIM on Y over the temperature sweep 0, 0.5, 0.8, 1, with sweep grids.
    PNGs go to --output and to an MLflow run linked to the training runs. SR test sets: -o eval_dir=FOLDER.
    """
    from monai_cnf.bundle.calibrate import run_calibration

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
