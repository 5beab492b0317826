"""What users hit (issue 14), through the ``cnf`` commands: each test fails on the CLI before the bundle layer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from monai_cnf.cli.main import app
from PIL import Image
from typer.testing import CliRunner

from monai_cnf import __version__

ROOT = Path(__file__).resolve().parents[2]
CLI_TESTS = ROOT / "tests" / "cli"


@pytest.fixture(autouse=True)
def _wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # Rich tables: one line per row


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """The CLI tests' tiny bundle (a FactoredBaseline; inference.json: num_samples 4, temperature 1.0)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("cli_conftest", CLI_TESTS / "conftest.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.write_bundle(tmp_path / "tiny")


def _png(path: Path, size: int = 16) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)).save(path)
    return path


def _error(result) -> str:
    assert result.exit_code != 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.output, result.stderr
    return lines[0]


def test_sample_takes_num_samples_and_temperature_from_the_bundle(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["sample", str(tiny), "--input", str(_png(tmp_path / "x.png")), "--output", str(out), "--seed", "0"]
    result = CliRunner().invoke(app, args, terminal_width=250)
    assert result.exit_code == 0, result.output
    assert "4 (bundle) / 1 (bundle)" in result.stdout  # inference.json's num_samples and temperature, said so
    assert sorted(p.name for p in out.glob("sample_*.png")) == [f"sample_{i:03d}.png" for i in range(4)]
    result = CliRunner().invoke(app, [*args, "--overwrite", "--num-samples", "2"], terminal_width=250)
    assert result.exit_code == 0 and "2 (given) / 1 (bundle)" in result.stdout


def test_sample_accepts_a_folder_of_images(tiny: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "b.png"):
        _png(images / name)
    (images / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    args = ["sample", str(tiny), "--input", str(images), "--output", str(out), "--num-samples", "2"]
    result = CliRunner().invoke(app, args, terminal_width=250)
    assert result.exit_code == 0, result.output
    for stem in ("a", "b"):
        assert (out / stem / "mean.png").is_file() and (out / stem / "sample_001.png").is_file()
    assert "(2 images)" in result.stdout


def test_unknown_override_key_is_refused_with_the_closest_key(tiny: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["train", str(tiny), "--device", "cpu", "--preset", "paper", "--run-dir", str(run), "-o", "max_epoch=3"]
    line = _error(CliRunner().invoke(app, args))
    assert "unknown override key 'max_epoch'" in line and "did you mean 'max_epochs'?" in line
    assert not run.exists()  # refused before anything was written


def test_override_value_of_the_wrong_type_names_the_key_before_any_work(tmp_path: Path) -> None:
    run = tmp_path / "run"
    bundle = ROOT / "bundles" / "drive_vessel"
    args = ["train", str(bundle), "--device", "cpu", "--preset", "cpu", "--run-dir", str(run)]
    line = _error(CliRunner().invoke(app, [*args, "-o", "network_def#num_levels=abc"]))
    assert "network_def#num_levels='abc'" in line and "an integer" in line
    assert not run.exists()  # no synthetic data set was generated
    line = _error(CliRunner().invoke(app, [*args, "-o", "learning_rte=0.01"]))
    assert "did you mean 'learning_rate'?" in line


def test_weights_that_do_not_fit_give_one_line_in_every_command(tiny: Path, tmp_path: Path) -> None:
    wrong = tmp_path / "conv.pt"
    torch.save(torch.nn.Conv2d(3, 1, 1).state_dict(), wrong)
    image = _png(tmp_path / "x.png")
    sample = ["sample", str(tiny), "--input", str(image), "--output", str(tmp_path / "o"), "--checkpoint", str(wrong)]
    evaluate = ["evaluate", str(tiny), "--device", "cpu", "--preset", "paper", "--checkpoint", str(wrong)]
    evaluate += ["--run-dir", str(tmp_path / "r")]
    (tiny / "configs" / "evaluate.json").write_text(json.dumps({"split": "test"}))
    for args in (sample, evaluate):
        line = _error(CliRunner().invoke(app, args))
        assert f"{wrong} does not fit the FactoredBaseline of" in line and "2 unexpected" in line, line


def test_verify_loads_the_shipped_weights_into_the_declared_network(tmp_path: Path) -> None:
    copy = tmp_path / "drive_vessel"
    shutil.copytree(ROOT / "bundles" / "drive_vessel" / "configs", copy / "configs")
    (copy / "models").mkdir()
    shutil.copy(ROOT / "bundles" / "super_resolution" / "models" / "model.pt", copy / "models" / "model.pt")
    result = CliRunner().invoke(app, ["bundle", "verify", str(copy)], terminal_width=250)
    assert result.exit_code == 1
    assert "weights load: models/model.pt" in result.stderr
    assert "does not fit the ConditionalNormalizingFlow of inference.json" in result.stdout


def test_verify_flags_stale_results(tiny: Path) -> None:
    from monai_cnf.bundle.verify import file_digest

    meta = json.loads((tiny / "configs" / "metadata.json").read_text())
    meta["eval_metrics"] = {"max_f": 0.8}
    meta["eval_metrics_weights"] = "0123456789ab"
    (tiny / "configs" / "metadata.json").write_text(json.dumps(meta))
    result = CliRunner().invoke(app, ["bundle", "verify", str(tiny)], terminal_width=250)
    assert result.exit_code == 0 and "stale: measured with weights 0123456789ab" in result.stdout
    meta["eval_metrics_weights"] = file_digest(tiny / "models" / "model.pt")
    (tiny / "configs" / "metadata.json").write_text(json.dumps(meta))
    result = CliRunner().invoke(app, ["bundle", "verify", str(tiny)], terminal_width=250)
    assert "stale:" not in result.stdout and "max_f 0.8" in result.stdout


def test_version_flag() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"monai_cnf {__version__}"
