"""A non-editable install gives a working ``cnf`` and no top-level ``cli`` module (issue 2, repository foundation).

The wheel is built from a copy of the sources (so the working tree is not touched), installed with ``--no-deps``
into a fresh venv that sees this environment's packages through a ``.pth`` file (nothing is downloaded) but not
the repository, and ``cnf`` is run from a folder outside the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from monai_cnf import __version__

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("train", "sample", "evaluate", "calibrate", "ui", "bundle", "version")


def _copy_sources(dst: Path) -> None:
    for name in ("pyproject.toml", "setup.py", "LICENSE", "README.md"):
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, dst / name)
    if not (dst / "README.md").exists():  # pyproject's readme; the real one may not be written yet
        (dst / "README.md").write_text("monai_cnf\n")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for pkg in ("monai_cnf", "cli"):
        shutil.copytree(ROOT / pkg, dst / pkg, ignore=ignore)


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    _copy_sources(src)
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(out), "-q"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_clean_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    wheels = list(out.glob("monai_cnf-*.whl"))
    assert len(wheels) == 1, list(out.iterdir())
    return wheels[0]


def test_wheel_contents(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "monai_cnf/cli/main.py" in names
    assert "monai_cnf/cli/__init__.py" in names
    assert "monai_cnf/tracking/handler.py" in names
    assert not [n for n in names if n.startswith("cli/") or n == "cli.py"], "a top-level cli module would be installed"
    dist_info = {n.split("/")[0] for n in names if ".dist-info/" in n}
    assert len(dist_info) == 1
    (info,) = dist_info
    entry_points = zipfile.ZipFile(wheel).read(f"{info}/entry_points.txt").decode()
    assert "cnf = monai_cnf.cli.main:app" in entry_points
    if f"{info}/top_level.txt" in names:
        assert zipfile.ZipFile(wheel).read(f"{info}/top_level.txt").decode().split() == ["monai_cnf"]


def test_fresh_venv_install_runs_cnf(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    # this environment's dependencies, but not the repository nor its editable-install finder (.pth files in a
    # folder added by a .pth line are not executed)
    (site / "_deps_from_test_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", str(wheel), "-q"]
    proc = subprocess.run(install, capture_output=True, text=True, env=_clean_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    assert not (site / "cli").exists() and not (site / "cli.py").exists()
    assert (site / "monai_cnf" / "cli" / "main.py").is_file()

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    cnf = venv / "bin" / "cnf"
    assert cnf.is_file()
    proc = subprocess.run([str(cnf), "--help"], capture_output=True, text=True, cwd=outside, env=_clean_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    for command in COMMANDS:
        assert command in proc.stdout
    proc = subprocess.run([str(cnf), "version"], capture_output=True, text=True, cwd=outside, env=_clean_env())
    assert proc.returncode == 0 and proc.stdout.strip() == __version__, proc.stderr[-2000:]
    where = subprocess.run(
        [
            str(py),
            "-c",
            "import importlib.util, monai_cnf.cli; "
            "print(monai_cnf.cli.__file__); print(importlib.util.find_spec('cli'))",
        ],
        capture_output=True,
        text=True,
        cwd=outside,
        env=_clean_env(),
    )
    cli_file, cli_spec = where.stdout.split()
    assert Path(cli_file).is_relative_to(site), cli_file  # the installed copy, not the working tree
    assert cli_spec == "None"
