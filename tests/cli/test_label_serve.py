"""``cnf label serve``: the offline MONAI Label command, the app's model link, and its errors.

A fake ``monailabel`` executable (found through ``MONAILABEL_VENV``) stands in for the label environment, so this
runs in the main environment; tests/label/test_monailabel_e2e.py starts a real server.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from monai_cnf.cli.main import app
from typer.testing import CliRunner

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "drive_vessel"


@pytest.fixture
def fake_label_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    exe = tmp_path / "venv" / "bin" / "monailabel"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    monkeypatch.setenv("MONAILABEL_VENV", str(exe.parents[1]))
    return exe


def test_print_command_is_offline_on_loopback_and_links_the_bundle(tmp_path: Path, fake_label_env: Path) -> None:
    app_dir, studies = tmp_path / "app", tmp_path / "studies"
    app_dir.mkdir()
    args = ["label", "serve", str(BUNDLE), "--studies", str(studies), "--app", str(app_dir), "--port", "8123"]
    result = CliRunner().invoke(app, [*args, "--conf", "cnf_num_samples=16", "--print-command"])
    assert result.exit_code == 0, result.output
    cmd = shlex.split(result.output.strip().splitlines()[-1])
    assert cmd[:2] == [str(fake_label_env), "start_server"]
    pairs = {tuple(cmd[i + 1 : i + 3]) for i, a in enumerate(cmd) if a == "--conf"}
    assert {("models", "drive_vessel"), ("zoo_source", "github"), ("sam2", "false"), ("cnf_num_samples", "16")} <= pairs
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--port") + 1] == "8123"
    assert cmd[cmd.index("--app") + 1] == str(app_dir.absolute())
    copy = app_dir / "model" / "drive_vessel"  # a copy: MONAI Label's training must not write into the repo
    assert (
        not copy.is_symlink()
        and (copy / "configs" / "inference.json").read_bytes() == (BUNDLE / "configs" / "inference.json").read_bytes()
    )
    assert studies.is_dir()
    # a second call serves the same copy, with whatever weights it holds by then
    (copy / "models" / "model.pt").write_bytes(b"retrained")
    assert CliRunner().invoke(app, [*args, "--print-command"]).exit_code == 0
    assert (copy / "models" / "model.pt").read_bytes() == b"retrained"


def test_existing_entry_that_is_not_a_bundle_is_never_replaced(tmp_path: Path, fake_label_env: Path) -> None:
    other = tmp_path / "app" / "model" / "drive_vessel"
    other.mkdir(parents=True)
    (other / "mine.txt").write_text("the user's")
    args = ["label", "serve", str(BUNDLE), "--studies", str(tmp_path / "s"), "--app", str(tmp_path / "app")]
    result = CliRunner().invoke(app, [*args, "--print-command"])
    assert result.exit_code == 1
    assert "is not a bundle" in result.output
    assert sorted(p.name for p in other.iterdir()) == ["mine.txt"]


def test_bad_conf_and_missing_app(tmp_path: Path, fake_label_env: Path) -> None:
    args = ["label", "serve", str(BUNDLE), "--studies", str(tmp_path / "s")]
    bad = CliRunner().invoke(app, [*args, "--app", str(tmp_path), "--conf", "novalue", "--print-command"])
    assert bad.exit_code == 1 and "KEY=VALUE" in bad.output
    missing = CliRunner().invoke(app, [*args, "--app", str(tmp_path / "nope"), "--print-command"])
    assert missing.exit_code == 1 and "does not exist" in missing.output
