"""``cnf ui``: MLflow's UI server on the project's store, bound to 127.0.0.1."""

from __future__ import annotations

import sys
from pathlib import Path

from monai_cnf.cli._errors import CLIError

__all__ = ["ui_command"]


def ui_command(tracking_uri: str, port: int, artifacts: Path | None = None, host: str = "127.0.0.1") -> list[str]:
    """The ``mlflow server`` command line for ``tracking_uri``.

    Artifacts are served from ``artifacts`` (default: ``mlartifacts`` next to a SQLite store, else
    ``./mlartifacts``). A SQLite store must already exist (else nothing has been tracked there yet).

    Example::

        ui_command("sqlite:////home/me/mlruns.db", 5000)
        # [python, "-m", "mlflow", "server", "--backend-store-uri", "sqlite:////home/me/mlruns.db",
        #  "--artifacts-destination", "/home/me/mlartifacts", "--host", "127.0.0.1", "--port", "5000"]
    """
    from monai_cnf.tracking.utils import sqlite_path

    if not 1 <= port <= 65535:
        raise CLIError(f"--port must be in 1..65535, got {port}.")
    db = sqlite_path(tracking_uri)
    if db is not None and not db.exists():
        raise CLIError(f"no MLflow store at {db}: run `cnf train` first, or pass --tracking-uri.")
    if artifacts is None:
        artifacts = db.parent / "mlartifacts" if db is not None else Path("mlartifacts").absolute()
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        tracking_uri,
        "--artifacts-destination",
        str(artifacts),
        "--host",
        host,
        "--port",
        str(port),
        "--workers",  # one local user: one worker starts in a fraction of the time of MLflow's default four
        "1",
    ]
