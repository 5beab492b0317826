"""``cnf train --init-weights``: a new run that starts from trained weights (network only).

Proof that the weights are loaded: with a learning rate of 0 the trained parameters come out unchanged (a run
from scratch does not), and the new run has its own epoch count and MLflow run. Wrong weights, a missing file and
``--resume`` together with ``--init-weights`` are refused before a run folder exists.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from monai_cnf.cli.main import app
from typer.testing import CliRunner

from monai_cnf.tracking import read_run_id

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bundles" / "drive_vessel"


def _e2e_tiny() -> list[str]:
    """The end-to-end test's tiny DRIVE overrides (3 synthetic 34 x 33 images, a 1-step flow, 2 steps an epoch)."""
    spec = importlib.util.spec_from_file_location("cli_e2e", Path(__file__).with_name("test_e2e.py"))
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.TINY


TINY = [*_e2e_tiny(), "-o", "log_model=false"]


def _train(tmp_path: Path, name: str, *extra: str) -> tuple[int, str]:
    args = ["train", str(BUNDLE), "--preset", "cpu", "--device", "cpu", "--run-dir", str(tmp_path / name)]
    result = CliRunner().invoke(app, [*args, "--max-epochs", "1", *TINY, *extra], terminal_width=200)
    return result.exit_code, result.output


def _parameters(path: Path) -> dict[str, torch.Tensor]:
    """The trained tensors of a weights file (BatchNorm's running statistics move even at a learning rate of 0)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v for k, v in state.items() if "running_" not in k and "num_batches_tracked" not in k}


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # the CLI sets it in-process; restored after the test
    return uri


@pytest.mark.slow
def test_init_weights_starts_from_the_weights(tmp_path: Path, store: str) -> None:
    code, out = _train(tmp_path, "first", "--tracking-uri", store)
    assert code == 0, out
    weights = tmp_path / "first" / "models" / "model_final.pt"
    trained = _parameters(weights)

    frozen = ["-o", "learning_rate=0", "--tracking-uri", store]
    code, out = _train(tmp_path, "again", "--init-weights", str(weights), *frozen)
    assert code == 0, out
    again = _parameters(tmp_path / "again" / "models" / "model_final.pt")
    assert again.keys() == trained.keys()
    assert all(torch.equal(again[k], trained[k]) for k in trained)
    assert read_run_id(tmp_path / "again") != read_run_id(tmp_path / "first")  # a new run, not a resume
    # resumed, the run keeps the record of the weights it started from (the MLflow param stays the same)
    args = ["train", str(BUNDLE), "--preset", "cpu", "--device", "cpu", "--run-dir", str(tmp_path / "again")]
    result = CliRunner().invoke(app, [*args, "--resume", "--max-epochs", "2", *TINY, *frozen], terminal_width=200)
    assert result.exit_code == 0, result.output
    resumed = json.loads((tmp_path / "again" / "config_resume.json").read_text())
    assert resumed["init_weights"] == str(weights) and "'init_weights'" not in result.output  # param unchanged

    code, out = _train(tmp_path, "scratch", *frozen)  # the control: the same run without --init-weights
    assert code == 0, out
    scratch = _parameters(tmp_path / "scratch" / "models" / "model_final.pt")
    assert not all(torch.equal(scratch[k], trained[k]) for k in trained)


def _refused(tmp_path: Path, *extra: str) -> str:
    code, out = _train(tmp_path, "refused", *extra)
    assert code == 1, out
    assert not (tmp_path / "refused").exists()  # nothing written: no run folder, no MLflow run
    lines = [line for line in out.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and "Traceback" not in out, out
    return lines[0]


def test_init_weights_of_another_model_are_refused(tmp_path: Path, store: str) -> None:
    factored = BUNDLE / "models" / "model_factored.pt"
    if not factored.is_file():
        pytest.skip("the bundle ships no factored weights")
    line = _refused(tmp_path, "--init-weights", str(factored))
    assert "does not fit" in line and "--preset and --model" in line


def test_init_weights_missing_file_or_with_resume(tmp_path: Path, store: str) -> None:
    assert "does not exist" in _refused(tmp_path, "--init-weights", str(tmp_path / "nope.pt"))
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    assert str(corrupt) in _refused(tmp_path, "--init-weights", str(corrupt))
    both = _refused(tmp_path, "--init-weights", str(corrupt), "--resume")
    assert "--init-weights" in both and "--resume" in both
