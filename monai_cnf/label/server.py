"""Build the ``monailabel start_server`` command for a monai_cnf bundle on an offline machine.

MONAI Label lives in its own environment (``scripts/monailabel_env.sh`` makes ``.venv-label``), so nothing here
imports ``monailabel``: these helpers only build the command line and the environment variables, for the CLI or a
test to run with :mod:`subprocess`.

Offline settings (MONAI Label 0.8.5, read from its source):

- ``--conf zoo_source github`` (and ``MONAI_ZOO_SOURCE=github``): the default source ``monaihosting`` makes
  ``get_bundle_models`` query the model zoo at start-up even for a bundle already on disk; with any other source a
  bundle folder present in ``<app>/model/<name>`` is used as is and nothing is downloaded.
- ``--conf sam2 false``: the ``monaibundle`` app otherwise adds SAM2 infer tasks (the ``sam2`` package comes with
  ``monailabel``) whose weights are downloaded from the Hugging Face hub.
- ``MONAI_LABEL_AUTO_UPDATE_SCORING=false``: no scoring run after start-up, each training and each
  ``/activelearning`` call (local work only, but it costs a CNF sampling pass per unlabeled image on 2 cores); run
  ``/scoring/cnf_uncertainty`` when you want fresh scores.
- ``--host 127.0.0.1``: the server listens on the loopback interface only.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

__all__ = ["OFFLINE_CONF", "OFFLINE_ENV", "default_app_dir", "find_monailabel", "monailabel_command", "monailabel_env"]

#: ``--conf`` values that keep the ``monaibundle`` app (and ours) offline
OFFLINE_CONF: dict[str, str] = {"zoo_source": "github", "sam2": "false"}

#: environment variables for an offline MONAI Label 0.8.x server
OFFLINE_ENV: dict[str, str] = {
    "MONAI_LABEL_AUTO_UPDATE_SCORING": "false",
    "MONAI_ZOO_SOURCE": "github",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "NO_PROXY": "127.0.0.1,localhost",
}


def default_app_dir() -> Path:
    """The app folder of this repository, ``apps/monailabel_cnf`` (next to the ``monai_cnf`` package).

    Returns:
        its absolute path (it may not exist in an installed, non-editable copy of the package).

    Example:
        >>> default_app_dir().name
        'monailabel_cnf'
    """
    return Path(__file__).resolve().parents[2] / "apps" / "monailabel_cnf"


def find_monailabel(venv: str | os.PathLike | None = None) -> Path | None:
    """Locate the ``monailabel`` executable: ``<venv>/bin/monailabel``, else ``$MONAILABEL_VENV``, else the
    repository's ``.venv-label``, else the ``PATH``.

    Args:
        venv: a virtual environment folder to look in first. Defaults to None.

    Returns:
        the executable's path, or None when MONAI Label is not installed anywhere we look.

    Example:
        >>> exe = find_monailabel("/nonexistent")  # falls back to $MONAILABEL_VENV, .venv-label, then the PATH
        >>> exe is None or (exe.name == "monailabel" and exe == find_monailabel())
        True
    """
    candidates = [venv, os.environ.get("MONAILABEL_VENV"), default_app_dir().parents[1] / ".venv-label"]
    for c in candidates:
        if c:
            exe = Path(c) / "bin" / "monailabel"
            if exe.is_file() and os.access(exe, os.X_OK):
                return exe
    found = shutil.which("monailabel")
    return Path(found) if found else None


def monailabel_command(
    app_dir: str | os.PathLike,
    studies: str | os.PathLike,
    bundle: str,
    port: int = 8000,
    host: str = "127.0.0.1",
    conf: Mapping[str, str] | None = None,
    executable: str | os.PathLike | None = None,
) -> list[str]:
    """The ``monailabel start_server`` argument list that serves ``bundle`` from ``app_dir`` on ``host:port``.

    The bundle must already be in ``<app_dir>/model/<bundle>`` (a copy or a symlink of ``bundles/<bundle>``):
    then MONAI Label loads it from disk and never asks the model zoo. Run the command with
    :func:`monailabel_env` as environment.

    Args:
        app_dir: the MONAI Label app folder (ours, ``apps/monailabel_cnf``, or the stock ``monaibundle``).
        studies: the studies (datastore) folder of images; labels go to ``<studies>/labels/final``.
        bundle: the bundle's folder name under ``<app_dir>/model``, e.g. ``"drive_vessel"``.
        port: TCP port. Defaults to 8000.
        host: address to bind; keep the loopback address on a shared machine. Defaults to "127.0.0.1".
        conf: extra ``--conf`` key/values (e.g. ``{"cnf_num_samples": "16"}``), added after
            :data:`OFFLINE_CONF`. Defaults to None.
        executable: the ``monailabel`` executable; None looks it up with :func:`find_monailabel` and falls back to
            ``"monailabel"``. Defaults to None.

    Returns:
        the argument list, ready for :func:`subprocess.Popen`.

    Raises:
        ValueError: an empty ``bundle`` or a ``port`` outside 1..65535.

    Example:
        >>> monailabel_command("app", "studies", "drive_vessel", port=8123, executable="monailabel")[:6]
        ['monailabel', 'start_server', '--app', 'app', '--studies', 'studies']
    """
    if not bundle or "/" in str(bundle) or "\\" in str(bundle):
        raise ValueError(f"bundle must be a folder name under <app_dir>/model (e.g. 'drive_vessel'), got {bundle!r}.")
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"port must be in 1..65535, got {port}.")
    exe = executable if executable is not None else (find_monailabel() or "monailabel")
    cmd = [
        str(exe),
        "start_server",
        "--app",
        str(app_dir),
        "--studies",
        str(studies),
        "--host",
        str(host),
        "--port",
        str(int(port)),
        "--conf",
        "models",
        str(bundle),
    ]
    for key, value in {**OFFLINE_CONF, **(conf or {})}.items():
        cmd += ["--conf", str(key), str(value)]
    return cmd


def monailabel_env(
    base: Mapping[str, str] | None = None, executable: str | os.PathLike | None = None, **extra: str
) -> dict[str, str]:
    """The environment for :func:`monailabel_command`: ``base`` (default ``os.environ``) + :data:`OFFLINE_ENV`.

    The ``monailabel`` launcher is a shell script that runs ``python -m monailabel.main`` with the first ``python``
    on the ``PATH``; so the label environment's ``bin`` is put first on ``PATH`` and ``MONAILABEL_PYEXE`` points at
    its interpreter. The repository root is prepended to ``PYTHONPATH`` so the bundle configs' ``monai_cnf``
    imports resolve even without an editable install of the package there.

    Args:
        base: the starting environment. Defaults to None (a copy of ``os.environ``).
        executable: the ``monailabel`` executable; None uses :func:`find_monailabel`. Defaults to None.
        extra: more variables, set last.

    Returns:
        a new dict.

    Example:
        >>> monailabel_env({})["MONAI_LABEL_AUTO_UPDATE_SCORING"]
        'false'
    """
    env = dict(os.environ if base is None else base)
    env.update(OFFLINE_ENV)
    exe = Path(executable) if executable is not None else find_monailabel()
    if exe is not None:
        bin_dir = exe.parent
        env["PATH"] = os.pathsep.join(p for p in (str(bin_dir), env.get("PATH", "")) if p)
        if (bin_dir / "python").exists():
            env["MONAILABEL_PYEXE"] = str(bin_dir / "python")
            env["VIRTUAL_ENV"] = str(bin_dir.parent)
    root = str(default_app_dir().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra)
    return env
