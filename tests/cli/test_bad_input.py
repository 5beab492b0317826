"""Bad input gets one clear error line and a non-zero exit, and nothing already written is lost."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from monai_cnf.cli._errors import error_line
from monai_cnf.cli.main import app
from PIL import Image
from typer.testing import CliRunner

from monai_cnf.bundle import BundleError


def _error(result) -> str:
    """The single stderr line of a failed command."""
    assert result.exit_code != 0, result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.output
    return lines[0]


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def test_not_a_bundle(tmp_path: Path, runner: CliRunner) -> None:
    (tmp_path / "empty").mkdir()
    for command in (["train"], ["evaluate"], ["bundle", "verify"]):
        line = _error(runner.invoke(app, [*command, str(tmp_path / "empty")]))
        assert "is not a MONAI bundle: no configs/metadata.json" in line
    line = _error(runner.invoke(app, ["bundle", "verify", str(tmp_path / "missing")]))
    assert "does not exist" in line
    (tmp_path / "file.json").write_text("{}")
    assert "is a file" in _error(runner.invoke(app, ["bundle", "verify", str(tmp_path / "file.json")]))


def test_config_that_does_not_parse_names_file_and_line(tiny_bundle: Path, runner: CliRunner) -> None:
    train = tiny_bundle / "configs" / "train.json"
    train.write_text('{\n  "device": "cpu",\n  "max_epochs": 1,,\n  "run": []\n}\n')
    line = _error(runner.invoke(app, ["train", str(tiny_bundle), "--device", "cpu"]))
    assert f"{train}:3:" in line and "invalid JSON" in line
    assert f"{train}:3:" in _error(runner.invoke(app, ["bundle", "verify", str(tiny_bundle)]))


def test_bad_override(tiny_bundle: Path, runner: CliRunner, tmp_path: Path) -> None:
    line = _error(
        runner.invoke(
            app, ["train", str(tiny_bundle), "--device", "cpu", "--run-dir", str(tmp_path / "r"), "-o", "max_epochs"]
        )
    )
    assert "an override is key=value" in line and "'max_epochs'" in line


def test_missing_overlay_lists_available_configs(tiny_bundle: Path, runner: CliRunner, tmp_path: Path) -> None:
    args = ["train", str(tiny_bundle), "--device", "cpu", "--model", "factored", "--run-dir", str(tmp_path / "r")]
    line = _error(runner.invoke(app, [*args, "--preset", "paper"]))
    assert "no configs/factored.json" in line and "inference, train" in line
    line = _error(runner.invoke(app, args))  # --preset auto on a CPU is the cpu preset
    assert "no configs/cpu.json (the CPU preset overlay)" in line


def test_existing_run_dir_is_not_overwritten(tiny_bundle: Path, runner: CliRunner, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "checkpoint_epoch=3.pt").write_bytes(b"precious weights")
    (run_dir / "mlflow_run_id").write_text("abc\n")
    before = _digest(run_dir)
    line = _error(runner.invoke(app, ["train", str(tiny_bundle), "--device", "cpu", "--run-dir", str(run_dir)]))
    assert "already holds 1 checkpoint(s)" in line and "--resume" in line
    assert _digest(run_dir) == before
    # and --resume on an empty run folder says there is nothing to resume
    line = _error(
        runner.invoke(app, ["train", str(tiny_bundle), "--device", "cpu", "--resume", "--run-dir", str(tmp_path / "x")])
    )
    assert "no checkpoint" in line


def _png(path: Path, channels: int) -> Path:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(16, 16, channels) if channels > 1 else (16, 16), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def test_sample_wrong_channels(tiny_bundle: Path, runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    gray = _png(tmp_path / "gray.png", 1)
    result = runner.invoke(app, ["sample", str(tiny_bundle), "--input", str(gray), "--output", str(out)])
    line = _error(result)
    assert "has 1 channel(s) but bundle tiny_bundle expects 3" in line and "num_channels" in line
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_sample_truncated_checkpoint(tiny_bundle: Path, runner: CliRunner, tmp_path: Path) -> None:
    good = (tiny_bundle / "models" / "model.pt").read_bytes()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(good[: len(good) // 2])
    rgb = _png(tmp_path / "rgb.png", 3)
    out = tmp_path / "out"
    args = ["sample", str(tiny_bundle), "--input", str(rgb), "--output", str(out), "--checkpoint", str(bad)]
    line = _error(runner.invoke(app, args))
    assert str(bad) in line and "corrupt or truncated" in line
    assert not out.exists()
    # evaluate checks the checkpoint the same way, before running anything
    args = ["evaluate", str(tiny_bundle), "--device", "cpu", "--checkpoint", str(bad), "--run-dir", str(tmp_path / "r")]
    assert "corrupt or truncated" in _error(runner.invoke(app, args))


def test_sample_does_not_overwrite(tiny_bundle: Path, runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "mean.png").write_bytes(b"an earlier result")
    rgb = _png(tmp_path / "rgb.png", 3)
    line = _error(runner.invoke(app, ["sample", str(tiny_bundle), "--input", str(rgb), "--output", str(out)]))
    assert "already holds mean.png" in line and "--overwrite" in line
    assert (out / "mean.png").read_bytes() == b"an earlier result"


def test_verify_reports_every_failed_check(tmp_path: Path, runner: CliRunner, make_bundle, metadata: dict) -> None:
    meta = metadata
    del meta["copyright"]
    meta["network_data_format"]["inputs"]["image"]["num_channels"] = 4  # the network takes 3
    bundle = make_bundle(tmp_path / "b", metadata=meta)
    result = runner.invoke(app, ["bundle", "verify", str(bundle)], terminal_width=200)
    assert result.exit_code == 1
    assert "missing: copyright" in result.stdout and "forward pass" in result.stdout
    # copyright, the forward pass and MONAI's verify_net_in_out fail; the missing results only warn
    assert result.stdout.count("FAIL") == 3 and result.stdout.count("pass") == 7 and "warn" in result.stdout
    assert "3 check(s) failed" in result.stderr and "verify_net_in_out" in result.stderr


def test_verify_passes_on_a_good_bundle(tiny_bundle: Path, runner: CliRunner) -> None:
    result = runner.invoke(app, ["bundle", "verify", str(tiny_bundle)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "FAIL" not in result.stdout and "(1, 3, 64, 64) -> (1, 1, 64, 64)" in result.stdout


def test_verbose_shows_the_traceback(tmp_path: Path, runner: CliRunner) -> None:
    result = runner.invoke(app, ["--verbose", "bundle", "verify", str(tmp_path)])
    assert result.exit_code != 0 and isinstance(result.exception, BundleError)


def test_error_line_uses_the_root_cause() -> None:
    try:
        try:
            raise ValueError("dataset_dir /x does not have the DRIVE layout:\n  expected training/images")
        except ValueError as inner:
            raise RuntimeError("Failed to instantiate {'_target_': ...}") from inner
    except RuntimeError as err:
        assert error_line(err) == "ValueError: dataset_dir /x does not have the DRIVE layout: expected training/images"
    assert error_line(KeyError("network_def")) == "KeyError: missing key 'network_def'"


@pytest.mark.parametrize("port", ["0", "70000"])
def test_ui_bad_port(port: str, runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "mlruns.db").write_bytes(b"")
    args = ["ui", "--tracking-uri", f"sqlite:///{tmp_path / 'mlruns.db'}", "--port", port]
    assert "--port must be in 1..65535" in _error(runner.invoke(app, args))


def test_ui_without_store(runner: CliRunner, tmp_path: Path) -> None:
    line = _error(runner.invoke(app, ["ui", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"]))
    assert "no MLflow store" in line


def test_ui_command_binds_localhost(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "mlruns.db").write_bytes(b"")
    args = ["ui", "--tracking-uri", f"sqlite:///{tmp_path / 'mlruns.db'}", "--port", "5123", "--print-command"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    out = result.stdout.split()
    assert out[out.index("--host") + 1] == "127.0.0.1" and out[out.index("--port") + 1] == "5123"
    assert out[out.index("--artifacts-destination") + 1] == str(tmp_path / "mlartifacts")
    assert out[out.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path / 'mlruns.db'}"
