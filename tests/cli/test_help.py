"""`cnf --help` is instant because nothing heavy is imported; every command is listed."""

from __future__ import annotations

import subprocess
import sys

import pytest
from monai_cnf.cli.main import app
from typer.testing import CliRunner

from monai_cnf import __version__

HEAVY = {"torch", "monai", "mlflow", "ignite", "numpy"}
COMMANDS = ("train", "sample", "evaluate", "calibrate", "ui", "bundle", "version")


def _imported_top_level(args: list[str]) -> tuple[set[str], str]:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "monai_cnf.cli", *args], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            names.add(name.split(".")[0])
    assert "typer" in names  # the parsing above works: typer itself is imported
    return names, proc.stdout


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["bundle", "verify", "--help"]])
def test_help_imports_no_heavy_library(args: list[str]) -> None:
    names, out = _imported_top_level(args)
    assert not names & HEAVY, sorted(names & HEAVY)
    assert "Usage" in out


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.stdout
    result = CliRunner().invoke(app, ["-h"])
    assert result.exit_code == 0 and "train" in result.stdout


def test_train_help_has_contract_options() -> None:
    result = CliRunner().invoke(app, ["train", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for option in (
        "--dataset-dir", "--max-epochs", "--device", "--model", "--preset", "--resume", "--override",
        "--tracking-uri", "--experiment", "--run-name", "--run-dir",
    ):  # fmt: skip
        assert option in result.stdout, option
    assert "cnf|factored" in result.stdout and "auto|cpu|paper" in result.stdout


def test_version() -> None:
    result = CliRunner().invoke(app, ["version"])
    assert result.exit_code == 0 and result.stdout.strip() == __version__
