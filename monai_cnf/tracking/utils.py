"""MLflow helpers that need neither torch nor mlflow at import time (the CLI uses them before any heavy import).

Conventions of the project (DESIGN.md, "Bundles, CLI, tracking"):

- the default store is a local SQLite database, ``sqlite:///<cwd>/mlruns.db``; artifacts go to an ``mlartifacts``
  folder next to the database file (``./mlartifacts`` for the default store);
- ``MLFLOW_TRACKING_URI`` (or an explicit URI, e.g. a server) replaces the default;
- one experiment per bundle; the MLflow run id of a training run is stored in its run folder
  (``<output_dir>/mlflow_run_id``) so that ``--resume`` continues the same run and evaluations link to it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from monai_cnf.bundle.run_folder import EVAL_RUN_ID, RUN_ID

__all__ = [
    "EVAL_RUN_ID_FILE",
    "MAX_PARAM_KEY_LENGTH",
    "MAX_PARAM_VALUE_LENGTH",
    "RUN_ID_FILE",
    "artifact_location_for",
    "default_tracking_uri",
    "flatten_config",
    "git_commit",
    "prepare_store",
    "read_run_id",
    "resolve_tracking_uri",
    "sqlite_path",
    "write_run_id",
]

logger = logging.getLogger(__name__)

#: Files in a run folder holding the MLflow run ids of the training run (read by ``--resume`` and evaluations) and of
#: its latest evaluation (the run-folder layout is spelled once, in :mod:`monai_cnf.bundle.run_folder`).
RUN_ID_FILE, EVAL_RUN_ID_FILE = RUN_ID, EVAL_RUN_ID
#: MLflow's limits (``mlflow.utils.validation``): parameter keys <= 250 characters, values <= 6000.
MAX_PARAM_KEY_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000
# characters MLflow accepts in param names: alphanumerics, _ - . space : /
_BAD_KEY_CHARS = re.compile(r"[^\w\-. :/]")


def default_tracking_uri(cwd: str | os.PathLike | None = None) -> str:
    """The project's default MLflow store: ``sqlite:///<cwd>/mlruns.db`` (absolute path).

    Args:
        cwd: folder holding the database. Defaults to the current working directory.

    >>> default_tracking_uri("/tmp/x")
    'sqlite:////tmp/x/mlruns.db'
    """
    folder = Path(cwd if cwd is not None else os.getcwd()).absolute()
    return f"sqlite:///{folder / 'mlruns.db'}"


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """The tracking URI to use: ``tracking_uri`` if given, else ``MLFLOW_TRACKING_URI``, else the SQLite default.

    A bare path (no ``scheme://``) is read as the path of a SQLite database, because MLflow 3 no longer accepts
    its file store.

    >>> resolve_tracking_uri("runs/x.db").startswith("sqlite:///")
    True
    """
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
    if "://" not in uri:
        uri = f"sqlite:///{Path(uri).absolute()}"
    return uri


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative paths resolved against the cwd), else ``None``.

    >>> str(sqlite_path("sqlite:////tmp/a/mlruns.db"))
    '/tmp/a/mlruns.db'
    >>> sqlite_path("http://127.0.0.1:5000") is None
    True
    """
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri[len("sqlite:///") :]).absolute()


def prepare_store(tracking_uri: str) -> None:
    """Make a SQLite store ready before a run uses it: its folder, and its tables created by one process at a time.

    MLflow creates and migrates a new SQLite database's tables when a client first opens it, without a lock: two
    trainings started at once on a fresh store (two ``cnf train`` in the background, a hyper-parameter sweep) race
    through the migrations and one dies with ``OperationalError: duplicate column name: step`` or ``table ... already
    exists``. Here the first opening happens under an exclusive ``flock`` on the database's folder (a directory can be
    locked on Linux and macOS, so no lock file is left beside the store); a second process waits, then finds the
    tables made. Other stores (an MLflow server) are left alone: the server owns its schema. Without ``fcntl``
    (Windows) the folder is still made, unlocked.

    Args:
        tracking_uri: an MLflow tracking URI (``sqlite:///...`` gets prepared).

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> prepare_store(f"sqlite:///{folder}/sub/mlruns.db")
        >>> (Path(folder) / "sub" / "mlruns.db").is_file()
        True
    """
    db = sqlite_path(tracking_uri)
    if db is None:
        return
    db.parent.mkdir(parents=True, exist_ok=True)  # SQLAlchemy does not create the folder
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        fcntl = None
    import mlflow

    folder = os.open(db.parent, os.O_RDONLY)
    try:
        if fcntl is not None:
            fcntl.flock(folder, fcntl.LOCK_EX)
        mlflow.MlflowClient(tracking_uri).search_experiments(max_results=1)  # opening creates/migrates the tables
    finally:
        os.close(folder)  # closing the descriptor releases the lock


def artifact_location_for(tracking_uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: ``mlartifacts`` next to a SQLite database, as a ``file://`` URI.

    For any other store (an MLflow server) ``None`` lets the server decide (``--artifacts-destination``).

    >>> artifact_location_for("sqlite:////tmp/a/mlruns.db")
    'file:///tmp/a/mlartifacts'
    """
    db = sqlite_path(tracking_uri)
    if db is None:
        return None
    return (db.parent / "mlartifacts").as_uri()


def _flatten(prefix: str, value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping) and value:
        for k, v in value.items():
            yield from _flatten(f"{prefix}::{k}" if prefix else str(k), v)
    elif isinstance(value, (list, tuple)) and value and any(isinstance(v, (Mapping, list, tuple)) for v in value):
        for i, v in enumerate(value):
            yield from _flatten(f"{prefix}::{i}" if prefix else str(i), v)
    else:
        yield prefix, value


def flatten_config(
    config: Mapping[str, Any],
    max_key_length: int = MAX_PARAM_KEY_LENGTH,
    max_value_length: int = MAX_PARAM_VALUE_LENGTH,
) -> dict[str, str]:
    """Flatten a (MONAI bundle) config into MLflow parameters.

    Nested keys are joined with MONAI's ``::`` separator (``train::trainer::max_epochs``; MLflow refuses ``#`` in
    names, and other characters it refuses become ``_``); lists of scalars stay one value, lists holding dicts are
    indexed (``train::handlers::0::_target_``). Values are JSON text; keys longer than ``max_key_length`` and
    values longer than ``max_value_length`` are cut, and a cut value ends with ``...``.

    Args:
        config: the resolved (merged, overridden) config, as ``ConfigParser.get()`` returns it.
        max_key_length: longest parameter key MLflow accepts. Defaults to 250.
        max_value_length: longest parameter value MLflow accepts. Defaults to 6000.

    >>> flatten_config({"a": {"b": 1, "c": [1, 2]}, "d": [{"+e": "x"}]})
    {'a::b': '1', 'a::c': '[1, 2]', 'd::0::_e': 'x'}
    """
    if max_value_length < 4:
        raise ValueError(f"max_value_length must be >= 4, got {max_value_length}.")
    params: dict[str, str] = {}
    for key, value in _flatten("", config):
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        if len(text) > max_value_length:
            text = text[: max_value_length - 3] + "..."
        params[_BAD_KEY_CHARS.sub("_", key)[:max_key_length]] = text
    return params


def git_commit(path: str | os.PathLike | None = None) -> str | None:
    """The commit hash of the git repository holding ``path`` (default: the cwd), or ``None`` outside a repository.

    Never raises: git missing, not a repository, or a timeout all give ``None``.
    """
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=str(path) if path is not None else None,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) >= 7 else None


def read_run_id(run_dir: str | os.PathLike, name: str = RUN_ID_FILE) -> str | None:
    """The MLflow run id stored in ``run_dir/name``, or ``None`` when there is none."""
    path = Path(run_dir) / name
    if not path.is_file():
        return None
    run_id = path.read_text().strip()
    return run_id or None


def write_run_id(run_dir: str | os.PathLike, run_id: str, name: str = RUN_ID_FILE) -> Path:
    """Store ``run_id`` in ``run_dir/name`` atomically (temporary file + ``os.replace``) and return the path."""
    folder = Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    tmp = folder / f".{name}.tmp"
    tmp.write_text(run_id + "\n")
    os.replace(tmp, path)
    return path
