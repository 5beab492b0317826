"""Entry point of the ``cnf`` command (console script ``cnf = monai_cnf.cli.main:app``).

Each command is its options, one call into :mod:`monai_cnf.bundle`, then a Rich table; torch, MONAI and MLflow are
imported inside the commands so that ``cnf --help`` answers at once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from monai_cnf.cli._errors import STATE, handle_errors, setup_logging
from monai_cnf.cli._options import (
    BundleArg,
    DatasetDir,
    Device,
    Experiment,
    ModelOpt,
    Override,
    PresetOpt,
    RunDir,
    RunName,
    TrackingUri,
    show_table,
)
from monai_cnf.cli.calibrate import calibrate

from monai_cnf.bundle.files import ModelKind as Model
from monai_cnf.bundle.files import Preset, Split

__all__ = ["app", "bundle_app", "label_app"]

app = typer.Typer(
    name="cnf",
    help="Conditional normalizing flows for MONAI: train, sample, evaluate and verify bundles, tracked in MLflow.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
)
bundle_app = typer.Typer(
    help="Bundle utilities.", no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]}
)
app.add_typer(bundle_app, name="bundle", rich_help_panel="Bundles")


Data, Run, Dist = "Data", "Run", "Distributed (torchrun)"


def _print_version(value: bool) -> None:
    if value:
        from monai_cnf import __version__

        typer.echo(f"monai_cnf {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show library logs and full tracebacks.")] = False,
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True)
    ] = False,
) -> None:
    """Conditional normalizing flows for MONAI."""
    STATE["verbose"] = verbose or os.environ.get("CNF_VERBOSE", "") not in ("", "0")


@app.command(rich_help_panel="Run")
@handle_errors
def train(
    bundle: BundleArg,
    dataset_dir: DatasetDir = None,
    max_epochs: Annotated[int | None, typer.Option(help="Epochs (default: the bundle's).", rich_help_panel=Run)] = None,
    device: Device = None,
    model: ModelOpt = Model.cnf,
    preset: PresetOpt = Preset.auto,
    resume: Annotated[
        bool, typer.Option(help="Continue the run in --run-dir (same MLflow run).", rich_help_panel=Run)
    ] = False,
    init_weights: Annotated[
        Path | None,
        typer.Option(
            help="Start a new run from these weights (network only; fresh optimizer and schedule), e.g. the "
            "bundle's models/model.pt.",
            rich_help_panel=Run,
        ),
    ] = None,
    override: Override = None,
    tracking_uri: TrackingUri = None,
    experiment: Experiment = None,
    run_name: RunName = None,
    run_dir: RunDir = None,
    amp: Annotated[
        bool,
        typer.Option(help="Mixed precision: bf16 autocast (fp16 + GradScaler without bf16).", rich_help_panel=Run),
    ] = False,
    nproc_per_node: Annotated[
        int | None,
        typer.Option(
            help="Processes on this machine (one per GPU): starts torchrun with configs/multi_gpu_train.json.",
            rich_help_panel=Dist,
        ),
    ] = None,
    nnodes: Annotated[int, typer.Option(help="Machines taking part (several machines).", rich_help_panel=Dist)] = 1,
    node_rank: Annotated[
        int | None, typer.Option(help="This machine's rank, 0..nnodes-1 (several machines).", rich_help_panel=Dist)
    ] = None,
    rdzv_endpoint: Annotated[
        str | None,
        typer.Option(help="HOST:PORT of the node-rank-0 machine (several machines).", rich_help_panel=Dist),
    ] = None,
) -> None:
    """Train a bundle (MONAI ConfigWorkflow over train.json + overlays), tracked in MLflow.

    With --nproc-per-node N, PyTorch's torchrun starts N processes (DDP; nccl on GPUs, gloo on CPU) on this machine.
    """
    from monai_cnf.cli._launch import is_torchrun_worker, worker_rank

    setup_logging(STATE["verbose"])
    if (nproc_per_node is not None or nnodes > 1) and not is_torchrun_worker():
        from monai_cnf.cli._launch import launch_training

        options = {
            "dataset_dir": dataset_dir,
            "max_epochs": max_epochs,
            "device": device,
            "model": model,
            "preset": preset,
            "resume": resume,
            "init_weights": init_weights.absolute() if init_weights is not None else None,
            "override": override,
            "tracking_uri": tracking_uri,
            "experiment": experiment,
            "run_name": run_name,
            "run_dir": run_dir.absolute() if run_dir is not None else None,
            "amp": amp,
        }
        nproc = 1 if nproc_per_node is None else nproc_per_node
        raise typer.Exit(launch_training(bundle, options, nproc, nnodes, node_rank, rdzv_endpoint))
    from monai_cnf.bundle.workflows import run_training

    r = run_training(
        bundle,
        dataset_dir=dataset_dir,
        max_epochs=max_epochs,
        device=device,
        model=model.value,
        preset=preset.value,
        resume=resume,
        init_weights=init_weights,
        overrides=override or [],
        tracking_uri=tracking_uri,
        experiment=experiment,
        run_name=run_name,
        run_dir=run_dir,
        amp=amp,
    )
    if worker_rank() == 0:
        show_table(f"cnf train {r.bundle}: {r.run_dir}", r.info, r.metrics)


@app.command(rich_help_panel="Run")
@handle_errors
def sample(
    bundle: BundleArg,
    input: Annotated[
        Path,
        typer.Option("--input", "-i", help="Input image x, or a folder of images.", exists=True, show_default=False),
    ],
    output: Annotated[Path, typer.Option("--output", help="Output folder.")] = Path("samples"),
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="Weights (.pt). Default: --run-dir's best/latest, else models/model.pt.", dir_okay=False),
    ] = None,
    run_dir: RunDir = None,
    num_samples: Annotated[int | None, typer.Option(help="N samples. Default: the bundle's num_samples.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Temperature tau. Default: the bundle's.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    device: Device = None,
    override: Override = None,
    overwrite: Annotated[bool, typer.Option(help="Replace files already in --output.")] = False,
) -> None:
    """Draw N samples of p(y|x) for an image (or each image of a folder); write samples, mean and std (PNG, NIfTI)."""
    from monai_cnf.bundle.sample import run_sampling

    setup_logging(STATE["verbose"])
    r = run_sampling(
        bundle,
        input_path=input,
        output=output,
        checkpoint=checkpoint,
        run_dir=run_dir,
        num_samples=num_samples,
        temperature=temperature,
        seed=seed,
        device=device,
        overrides=override or [],
        overwrite=overwrite,
    )
    show_table(f"cnf sample: {r.output}", {**r.info, **{name: f"shape {shape}" for name, shape in r.files.items()}})


@app.command(rich_help_panel="Run")
@handle_errors
def evaluate(
    bundle: BundleArg,
    split: Annotated[Split, typer.Option(help="Dataset split.", rich_help_panel=Data)] = Split.test,
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="Weights. Default: --run-dir's best/latest, else models/model.pt.", rich_help_panel=Run),
    ] = None,
    run_dir: RunDir = None,
    dataset_dir: DatasetDir = None,
    num_samples: Annotated[int | None, typer.Option(help="Samples per image.", rich_help_panel=Run)] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature.", rich_help_panel=Run)] = None,
    device: Device = None,
    model: ModelOpt = Model.cnf,
    preset: PresetOpt = Preset.auto,
    override: Override = None,
    tracking_uri: TrackingUri = None,
    experiment: Experiment = None,
    run_name: RunName = None,
) -> None:
    """Evaluate a checkpoint on a split with the bundle's metrics; logged to MLflow, linked to its training run."""
    from monai_cnf.bundle.workflows import run_evaluation

    setup_logging(STATE["verbose"])
    r = run_evaluation(
        bundle,
        split=split.value,
        checkpoint=checkpoint,
        run_dir=run_dir,
        dataset_dir=dataset_dir,
        device=device,
        model=model.value,
        preset=preset.value,
        num_samples=num_samples,
        temperature=temperature,
        overrides=override or [],
        tracking_uri=tracking_uri,
        experiment=experiment,
        run_name=run_name,
    )
    show_table(f"cnf evaluate {r.bundle} ({split.value})", r.info, r.metrics)


@app.command(rich_help_panel="Tracking")
@handle_errors
def ui(
    tracking_uri: TrackingUri = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000,
    print_command: Annotated[bool, typer.Option(help="Only print the mlflow command.")] = False,
) -> None:
    """Open the MLflow UI on the project's store (bound to 127.0.0.1, artifacts from ./mlartifacts)."""
    import shlex
    import subprocess

    from monai_cnf.cli._ui import ui_command

    from monai_cnf.tracking.utils import resolve_tracking_uri

    cmd = ui_command(resolve_tracking_uri(tracking_uri), port)
    typer.echo(shlex.join(cmd) if print_command else f"MLflow UI on http://127.0.0.1:{port} (Ctrl-C to stop)")
    if not print_command:
        raise typer.Exit(subprocess.call(cmd))


@bundle_app.command("verify")
@handle_errors
def bundle_verify(bundle: BundleArg) -> None:
    """Offline checks: metadata fields, configs parse, networks build, a forward pass at the declared shape."""
    from rich.console import Console
    from rich.table import Table

    from monai_cnf.bundle import load_bundle
    from monai_cnf.bundle.verify import verify_bundle

    rows = verify_bundle(load_bundle(bundle))
    table = Table(title=f"cnf bundle verify {bundle}", header_style="bold")
    for col in ("check", "ok", "detail"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r.name, "[green]pass[/]" if r.ok else "[yellow]warn[/]" if r.warn else "[red]FAIL[/]", r.detail)
    Console().print(table)
    failed = [r.name for r in rows if not r.ok and not r.warn]
    if failed:
        typer.secho(f"Error: {len(failed)} check(s) failed: {', '.join(failed)}.", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)


label_app = typer.Typer(
    help="MONAI Label with our bundles.", no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]}
)
app.add_typer(label_app, name="label", rich_help_panel="Bundles")


@label_app.command("serve")
@handle_errors
def label_serve(
    bundle: BundleArg,
    studies: Annotated[Path, typer.Option(help="Studies (datastore) folder of images; created if missing.")],
    port: Annotated[int, typer.Option(help="TCP port on 127.0.0.1.")] = 8000,
    app_dir: Annotated[
        Path | None, typer.Option("--app", help="MONAI Label app folder. Default: apps/monailabel_cnf.")
    ] = None,
    conf: Annotated[
        list[str] | None, typer.Option(help="Extra app setting KEY=VALUE (repeatable), e.g. cnf_num_samples=16.")
    ] = None,
    print_command: Annotated[bool, typer.Option(help="Print the command instead of starting the server.")] = False,
) -> None:
    """Start MONAI Label on 127.0.0.1 serving BUNDLE, offline (no model-zoo lookups, no SAM2 download)."""
    import shlex
    import subprocess

    from monai_cnf.cli._label import serve_command

    from monai_cnf.bundle import load_bundle

    cmd, env, served = serve_command(load_bundle(bundle).root, studies, app_dir, port, conf or [])
    typer.echo(f"serving the bundle copy {served} (MONAI Label's training writes its weights there)", err=True)
    typer.echo(shlex.join(cmd) if print_command else f"MONAI Label on http://127.0.0.1:{port} (Ctrl-C to stop)")
    if not print_command:
        raise typer.Exit(subprocess.call(cmd, env=env))


# `cnf calibrate` lives in its own module (another engineer's); its top-level imports are as light as this one's.
app.command(rich_help_panel="Run")(calibrate)


@app.command(rich_help_panel="Tracking")
def version() -> None:
    """Print the installed monai_cnf version."""
    from monai_cnf import __version__

    typer.echo(__version__)


if __name__ == "__main__":
    app()
