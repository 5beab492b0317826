"""``cnf train --nproc-per-node N``: the torchrun command it builds, what each worker parses back, and bad input
(one error line, nothing launched)."""

from __future__ import annotations

from pathlib import Path

import pytest
from monai_cnf.cli import _launch
from monai_cnf.cli.main import app
from typer.testing import CliRunner

DRIVE = Path(__file__).resolve().parents[2] / "bundles" / "drive_vessel"


@pytest.fixture
def launched(monkeypatch) -> list:
    calls: list = []
    monkeypatch.setattr(_launch, "launch", lambda cmd, verbose=False: calls.append(list(cmd)) or 0)
    for key in ("LOCAL_RANK", "WORLD_SIZE", "RANK"):
        monkeypatch.delenv(key, raising=False)
    return calls


def _error(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def test_workers_receive_the_same_training(launched, monkeypatch, tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["train", str(DRIVE), "--nproc-per-node", "2", "--device", "cpu", "--max-epochs", "3", "--amp"]
    args += ["--run-dir", str(tmp_path / "run"), "-o", "num_val=2", "-o", "train#batch_size=1", "--resume"]
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "checkpoint_epoch=1.pt").write_bytes(b"x")
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (cmd,) = launched
    i = cmd.index("-m", 3)
    assert cmd[1:i] == ["-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone"]
    assert cmd[i : i + 3] == ["-m", "monai_cnf.cli", "train"]
    # a worker (torchrun's environment) parses those arguments back into the same training
    seen = {}
    monkeypatch.setattr("monai_cnf.bundle.workflows.run_training", lambda bundle, **kw: seen.update(kw, bundle=bundle))
    monkeypatch.setattr("monai_cnf.cli.main.show_table", lambda *a, **k: None)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    result = runner.invoke(app, cmd[i + 2 :])
    assert result.exit_code == 0, result.output
    assert len(launched) == 1  # a worker trains; it never launches again
    assert seen["bundle"] == DRIVE and seen["max_epochs"] == 3 and seen["amp"] is True and seen["resume"] is True
    assert seen["overrides"] == ["num_val=2", "train#batch_size=1"] and seen["device"] == "cpu"
    assert seen["run_dir"] == tmp_path / "run"


def test_multi_node_command(launched, tmp_path: Path) -> None:
    args = ["train", str(DRIVE), "--nproc-per-node", "4", "--nnodes", "2", "--node-rank", "1"]
    args += ["--rdzv-endpoint", "node0:29500", "--run-dir", str(tmp_path / "run")]
    assert CliRunner().invoke(app, args).exit_code == 0
    cmd = launched[0]
    assert cmd[cmd.index("--nnodes") : cmd.index("--nnodes") + 8] == [
        "--nnodes", "2", "--node-rank", "1", "--rdzv-backend", "static", "--rdzv-endpoint", "node0:29500",
    ]  # fmt: skip
    assert "--standalone" not in cmd


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--nproc-per-node", "0"], "--nproc-per-node must be >= 1"),
        (["--nproc-per-node", "2", "--nnodes", "0"], "--nnodes must be >= 1"),
        (["--nproc-per-node", "2", "--nnodes", "2", "--node-rank", "0"], "--rdzv-endpoint HOST:PORT"),
        (
            ["--nproc-per-node", "2", "--nnodes", "2", "--node-rank", "2", "--rdzv-endpoint", "h:1"],
            "--node-rank between",
        ),
        (["--nproc-per-node", "2", "--node-rank", "1"], "for several machines: pass --nnodes"),
    ],
)
def test_bad_launcher_options(launched, tmp_path: Path, extra: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["train", str(DRIVE), "--run-dir", str(tmp_path / "run"), *extra])
    assert message in _error(result)
    assert not launched


def test_checks_before_launching(launched, tiny_bundle: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    line = _error(runner.invoke(app, ["train", str(tiny_bundle), "--nproc-per-node", "2"]))
    assert "no configs/multi_gpu_train.json (needed by --nproc-per-node)" in line
    (tmp_path / "run" / "models").mkdir(parents=True)
    (tmp_path / "run" / "models" / "model.pt").write_bytes(b"x")
    line = _error(
        runner.invoke(app, ["train", str(DRIVE), "--nproc-per-node", "2", "--run-dir", str(tmp_path / "run")])
    )
    assert "already holds 1 checkpoint" in line
    assert not launched
