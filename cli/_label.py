"""``cnf label serve``: MONAI Label on 127.0.0.1 with the offline settings, serving one of our bundles.

MONAI Label runs from its own environment (``make label-env``); this module only prepares the app folder and
builds the command with :func:`monai_cnf.label.monailabel_command` (nothing here imports MONAI Label or torch).
"""

from __future__ import annotations

from pathlib import Path

from monai_cnf.cli._errors import CLIError

__all__ = ["link_bundle", "serve_command"]


def link_bundle(app_dir: Path, bundle_root: Path) -> Path:
    """Put a working copy of ``bundle_root`` at ``<app_dir>/model/<bundle name>``, where MONAI Label looks for it.

    A copy, not a link: MONAI Label's training writes new weights into the served bundle, and the repository's
    shipped weights must not be overwritten. An existing copy is served as it is (it may hold weights retrained
    from the user's labels) and is never replaced; an entry there that is not a bundle is an error.
    """
    import shutil

    if not app_dir.is_dir():
        raise CLIError(f"MONAI Label app folder {app_dir} does not exist; pass --app (default: apps/monailabel_cnf).")
    target = app_dir / "model" / bundle_root.name
    if target.exists():
        if not (target / "configs" / "metadata.json").is_file():
            raise CLIError(f"{target} exists but is not a bundle (no configs/metadata.json); move it away first.")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(bundle_root, target, ignore=shutil.ignore_patterns("runs", "__pycache__"))
    return target


def serve_command(
    bundle_root: Path, studies: Path, app_dir: Path | None, port: int, conf: list[str]
) -> tuple[list[str], dict[str, str], Path]:
    """The ``monailabel start_server`` argument list, its environment and the served bundle copy (module doc)."""
    from monai_cnf.label import find_monailabel, monailabel_command, monailabel_env
    from monai_cnf.label.server import default_app_dir

    exe = find_monailabel()
    if exe is None:
        raise CLIError(
            "MONAI Label is not installed: run `make label-env` (creates .venv-label) or set MONAILABEL_VENV."
        )
    extra: dict[str, str] = {}
    for item in conf:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CLIError(f"--conf expects KEY=VALUE (e.g. cnf_num_samples=16), got {item!r}.")
        extra[key] = value
    app = (app_dir or default_app_dir()).absolute()
    served = link_bundle(app, bundle_root)
    studies.mkdir(parents=True, exist_ok=True)
    cmd = monailabel_command(app, studies.absolute(), bundle_root.name, port=port, conf=extra, executable=exe)
    return cmd, monailabel_env(executable=exe), served
