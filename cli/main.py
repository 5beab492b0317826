"""Entry point of the ``cnf`` command. Heavy imports (torch, monai, mlflow) happen inside commands."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="cnf",
    help="Conditional normalizing flows for MONAI: train, sample, evaluate and calibrate bundles.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode="rich",
)


@app.command()
def version() -> None:
    """Print the installed monai_cnf version."""
    from monai_cnf import __version__

    typer.echo(__version__)


if __name__ == "__main__":
    app()
