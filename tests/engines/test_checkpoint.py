"""Atomic checkpoints, clear errors for corrupt files, exact resume (in-process and after SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine

from monai_cnf.engines import (
    AtomicCheckpointSaver,
    AtomicDiskSaver,
    CorruptCheckpointError,
    ResumeCheckpointLoader,
    latest_checkpoint,
    load_checkpoint,
)

TRAIN_SCRIPT = """
import sys, time, torch
from pathlib import Path
torch.set_num_threads(1)
from ignite.engine import Events
from monai.handlers import LrScheduleHandler
from torch.utils.data import DataLoader
from monai_cnf.engines import AtomicCheckpointSaver, FlowTrainer, ResumeCheckpointLoader
{stand_in}
out, max_epochs, resume, sleep = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1", float(sys.argv[4])
torch.manual_seed(0)
net = TinyFlow()
opt = torch.optim.Adam(net.parameters(), lr=1e-2)
sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
loader = DataLoader(make_batches(), batch_size=4, shuffle=False)
trainer = FlowTrainer("cpu", max_epochs, loader, net, opt)
if sleep:
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: time.sleep(sleep))
objs = {{"network": net, "optimizer": opt, "lr_scheduler": sched, "trainer": trainer}}
ResumeCheckpointLoader(out / "checkpoints", objs, enabled=resume).attach(trainer)
LrScheduleHandler(sched, print_lr=False).attach(trainer)
AtomicCheckpointSaver(str(out / "checkpoints"), objs, save_interval=1, n_saved=2).attach(trainer)
trainer.run()
torch.save({{"params": {{k: v.clone() for k, v in net.state_dict().items()}}, "epoch": trainer.state.epoch,
            "iteration": trainer.state.iteration, "lr": opt.param_groups[0]["lr"]}}, out / "final.pt")
"""


def test_saver_names_retention_and_latest(tmp_path: Path) -> None:
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    saver = AtomicCheckpointSaver(str(tmp_path), {"network": net, "optimizer": opt}, save_interval=1, n_saved=2)
    assert all(isinstance(c.save_handler, AtomicDiskSaver) for c in [saver._interval_checkpoint])

    engine = Engine(lambda e, b: None)
    for epoch in (1, 2, 3):
        engine.state.epoch = epoch
        saver.interval_completed(engine)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint_epoch=2.pt", "checkpoint_epoch=3.pt"]  # n_saved=2, no temporary leftovers
    assert latest_checkpoint(tmp_path) == str(tmp_path / "checkpoint_epoch=3.pt")
    (tmp_path / "checkpoint_epoch=10.pt").write_bytes(b"")
    assert latest_checkpoint(tmp_path).endswith("epoch=10.pt")  # numeric, not lexicographic


def test_interrupted_save_keeps_the_old_file(tmp_path: Path) -> None:
    saver = AtomicDiskSaver(tmp_path)
    saver({"a": torch.ones(3)}, "model.pt")

    def _dies_halfway(obj, f):
        f.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        saver._save_func({"a": torch.zeros(3)}, tmp_path / "model.pt", _dies_halfway)
    assert torch.equal(load_checkpoint(tmp_path / "model.pt")["a"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_corrupt_checkpoint_error(tmp_path: Path) -> None:
    good = tmp_path / "checkpoint_epoch=1.pt"
    torch.save({"network": torch.nn.Linear(2, 2).state_dict()}, good)
    bad = tmp_path / "checkpoint_epoch=2.pt"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CorruptCheckpointError, match=r"checkpoint .*epoch=2\.pt is corrupt or truncated; delete it"):
        load_checkpoint(bad)
    loader = ResumeCheckpointLoader(tmp_path, {"network": torch.nn.Linear(2, 2)})
    with pytest.raises(CorruptCheckpointError, match="--checkpoint"):
        loader(type("E", (), {"state": None, "logger": None})())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def _run(script: Path, out: Path, max_epochs: int, resume: bool, sleep: float = 0.0) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(script), str(out), str(max_epochs), "1" if resume else "0", str(sleep)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path: Path, tiny_flow_source: str) -> None:
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT.format(stand_in=tiny_flow_source))
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    ref = _run(script, reference, 4, False)  # runs alongside the one we kill

    proc = _run(script, killed, 4, False, sleep=0.2)  # 4 iterations per epoch, ~0.8 s per epoch
    first = killed / "checkpoints" / "checkpoint_epoch=1.pt"
    deadline = time.time() + 60
    while not first.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert first.exists(), proc.communicate()[0].decode()[-2000:]
    time.sleep(0.3)  # now inside epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "final.pt").exists()
    ckpts = sorted(p.name for p in (killed / "checkpoints").iterdir())
    assert "checkpoint_epoch=4.pt" not in ckpts and all(not n.endswith(".tmp") or n.startswith(".") for n in ckpts)
    assert load_checkpoint(latest_checkpoint(killed / "checkpoints"))["trainer"]["iteration"] >= 4

    resumed = _run(script, killed, 4, True)
    out_resumed = resumed.communicate(timeout=120)[0].decode()
    out_ref = ref.communicate(timeout=120)[0].decode()
    assert resumed.returncode == 0, out_resumed[-3000:]
    assert ref.returncode == 0, out_ref[-3000:]
    a, b = torch.load(killed / "final.pt"), torch.load(reference / "final.pt")
    assert (a["epoch"], a["iteration"]) == (b["epoch"], b["iteration"]) == (4, 16)
    assert a["lr"] == pytest.approx(1e-2 * 0.5**4)  # scheduler restored, not restarted
    for k in b["params"]:
        assert torch.equal(a["params"][k], b["params"][k]), k  # bit-identical to the uninterrupted run
    assert sorted(p.name for p in (killed / "checkpoints").iterdir()) == [
        "checkpoint_epoch=3.pt",
        "checkpoint_epoch=4.pt",
    ]


def _score_run(save_dir: Path, scores: list[float], restore_best: bool) -> tuple[AtomicCheckpointSaver, Engine]:
    """Epoch e sets the network weight to ``10 * scores[e - 1]`` and reports ``acc = scores[e - 1]``."""
    from ignite.engine import Events

    net = torch.nn.Linear(1, 1, bias=False)
    engine = Engine(lambda e, b: None)
    engine.state.best_metric, engine.state.best_metric_epoch = -1, -1  # as a MONAI workflow's state

    @engine.on(Events.EPOCH_COMPLETED)
    def _report(e: Engine) -> None:
        score = scores[e.state.epoch - 1]
        with torch.no_grad():
            net.weight.fill_(10 * score)
        e.state.metrics["acc"] = score

    saver = AtomicCheckpointSaver(
        str(save_dir),
        {"network": net},
        restore_best=restore_best,
        save_key_metric=True,
        key_metric_name="acc",
        key_metric_filename="model.pt",
    )
    saver.attach(engine)
    engine.run([0], max_epochs=len(scores))
    return saver, engine


def _best_weight(save_dir: Path) -> float:
    return float(torch.load(save_dir / "model.pt", weights_only=True)["weight"].item())


def test_best_metric_survives_resume(tmp_path: Path) -> None:
    import json

    _score_run(tmp_path, [0.5, 0.8, 0.6], restore_best=False)
    assert _best_weight(tmp_path) == pytest.approx(8.0)  # epoch 2 was best
    info = json.loads((tmp_path / "key_metric.json").read_text())
    assert info["best_metric"] == pytest.approx(0.8) and info["best_metric_epoch"] == 2

    # resumed: a worse first validation (0.7 < 0.8) must not replace the best model; the engine knows the best
    saver, engine = _score_run(tmp_path, [0.7], restore_best=True)
    assert saver.restored_best is not None
    assert _best_weight(tmp_path) == pytest.approx(8.0)
    assert engine.state.best_metric == pytest.approx(0.8) and engine.state.best_metric_epoch == 2

    # a better one does, and the record follows
    _score_run(tmp_path, [0.9], restore_best=True)
    assert _best_weight(tmp_path) == pytest.approx(9.0)
    assert json.loads((tmp_path / "key_metric.json").read_text())["best_metric"] == pytest.approx(0.9)


def test_best_metric_not_restored_without_resume_or_model(tmp_path: Path) -> None:
    _score_run(tmp_path, [0.8], restore_best=False)
    _score_run(tmp_path, [0.3], restore_best=False)  # a fresh (non-resumed) run starts its own ranking
    assert _best_weight(tmp_path) == pytest.approx(3.0)
    (tmp_path / "model.pt").unlink()  # the record names a model that is gone: ignored
    saver, _ = _score_run(tmp_path, [0.1], restore_best=True)
    assert saver.restored_best is None
    assert _best_weight(tmp_path) == pytest.approx(1.0)
