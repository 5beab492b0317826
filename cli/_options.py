"""Options shared by the ``cnf`` commands (declared once) and the Rich table every command ends with.

The enums are the library's (:mod:`monai_cnf.bundle.files`); nothing heavy is imported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from monai_cnf.bundle.files import ModelKind, Preset

__all__ = [
    "BundleArg",
    "DatasetDir",
    "Device",
    "Experiment",
    "ModelOpt",
    "Override",
    "PresetOpt",
    "RunDir",
    "RunName",
    "TrackingUri",
    "show_table",
]

DATA, RUN, TRACK = "Data", "Run", "Tracking"

BundleArg = Annotated[Path, typer.Argument(help="Bundle folder, e.g. bundles/drive_vessel.", show_default=False)]
TrackingUri = Annotated[
    str | None,
    typer.Option(
        help="MLflow store. Default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlruns.db.", rich_help_panel=TRACK
    ),
]
Experiment = Annotated[
    str | None, typer.Option(help="MLflow experiment. Default: the bundle name.", rich_help_panel=TRACK)
]
RunName = Annotated[str | None, typer.Option(help="MLflow run name.", rich_help_panel=TRACK)]
RunDir = Annotated[
    Path | None,
    typer.Option(help="Run folder (checkpoints, config, logs). Default: runs/<bundle>-<model>.", rich_help_panel=RUN),
]
Device = Annotated[
    str | None, typer.Option(help="cpu, cuda or cuda:N. Default: cuda when available.", rich_help_panel=RUN)
]
ModelOpt = Annotated[ModelKind, typer.Option("--model", help="CNF or the factored baseline.", rich_help_panel=RUN)]
PresetOpt = Annotated[
    Preset, typer.Option("--preset", help="Config preset (cpu.json / paper), for weights outside a run folder.",
                         rich_help_panel=RUN),
]  # fmt: skip
DatasetDir = Annotated[
    Path | None,
    typer.Option(
        help="Dataset folder (e.g. DRIVE). Default: the bundle's embedded default (synthetic / scikit-image).",
        exists=True,
        file_okay=False,
        rich_help_panel=DATA,
    ),
]
Override = Annotated[
    list[str] | None,
    typer.Option(
        "--override",
        "-o",
        help="key=value config override (repeatable; '#' separates nested keys; values parsed as JSON; checked "
        "against the bundle before anything runs).",
        rich_help_panel=RUN,
    ),
]


def show_table(title: str, rows: Mapping[str, Any], metrics: Mapping[str, float] | None = None) -> None:
    """Metrics (cyan) then information rows, as a two-column Rich table on stdout."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("item")
    table.add_column("value", overflow="fold")
    for k, v in (metrics or {}).items():
        table.add_row(f"[cyan]{k}[/]", f"{v:.6g}")
    for k, v in rows.items():
        table.add_row(k, str(v))
    Console().print(table)
