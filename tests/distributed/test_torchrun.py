"""The model zoo's launch line on CPU (gloo): ``torchrun --nproc_per_node=2 -m monai.bundle run --config_file
"['configs/train.json','configs/multi_gpu_train.json']"`` on a tiny synthetic DRIVE set.

- 2 processes x batch 1 end with the parameters of 1 process x batch 2 (same global batches, same steps);
- they write one set of checkpoints and one MLflow run;
- ``cnf train --nproc-per-node 2`` killed with SIGKILL resumes under torchrun and finishes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bundles" / "drive_vessel"
ENV = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "1"}

#: deterministic training: continuous flow (no dequantization noise), no augmentation, whole padded images,
#: instance norm (no batch statistics), so the only difference between the runs is how the batch is split.
TINY = {
    "synthetic_num_train": 6,
    "synthetic_num_test": 1,
    "synthetic_size": [66, 62],
    "num_val": 2,
    "num_samples": 1,
    "num_steps": 1,
    "hidden_channels": 8,
    "feature_channels": [4, 8],
    "dequantizer_kwargs": None,
    "network_def#dequantization": "none",
    "conditioner_norm": "instance",
    "pad_transform": {"_target_": "DivisiblePadd", "keys": ["image", "label", "mask"], "k": 4},
    "train#preprocessing_transforms": "$monai_cnf.data.drive_load_transforms(['image', 'label']) + "
    "[monai.transforms.DivisiblePadd(keys=['image', 'label'], k=4), "
    "monai.transforms.EnsureTyped(keys=['image', 'label'], track_meta=False)]",
    "validate#key_metric": {"val_bpd": {"_target_": "monai_cnf.engines.BitsPerDim"}},  # samples are not binary
    "validate#additional_metrics": None,
    "val_interval": 1,
    # SGD, not the bundle's Adam: Adam divides by the gradient's RMS, so a parameter whose exact gradient is 0 (a conv
    # bias before InstanceNorm) moves by ~lr on float round-off alone, differently for any two summation orders
    "optimizer#_target_": "torch.optim.SGD",
    "learning_rate": 0.05,
    "num_workers": 0,
    "progress": False,
    "device": "cpu",
    "max_epochs": 2,
}
#: float32 gradients summed in another order (per rank, then all-reduced) differ by round-off; after the 4 SGD steps
#: the largest parameter difference measured was 1.2e-6 (the parameters move by > 100x ATOL between epochs 1 and 2).
ATOL = 1e-5

pytestmark = pytest.mark.slow


def _torchrun(nproc: int, out: Path, **override) -> subprocess.CompletedProcess:
    """The model zoo's line, with the tiny settings as one more config file before the multi-GPU overlay."""
    out.mkdir(parents=True)
    tiny = out / "tiny.json"
    values = {**TINY, "bundle_root": str(BUNDLE), "tracking_uri": f"sqlite:///{out}/mlruns.db", **override}
    tiny.write_text(json.dumps(values))
    configs = [str(BUNDLE / "configs" / "train.json"), str(tiny), str(BUNDLE / "configs" / "multi_gpu_train.json")]
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    args += ["-m", "monai.bundle", "run", "--config_file", str(configs), "--output_dir", str(out)]
    proc = subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=240, cwd=out.parent)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    return proc


def _weights(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("network", state)


def _mlflow_runs(out: Path) -> list:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{out}/mlruns.db")
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


def test_two_processes_equal_one_process_on_the_global_batch(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    _torchrun(1, one, **{"train#batch_size": 2})
    log = _torchrun(2, two, **{"train#batch_size": 1})
    a, b = _weights(one / "models" / "model_final.pt"), _weights(two / "models" / "model_final.pt")
    assert a.keys() == b.keys()
    for name in a:
        if a[name].is_floating_point():
            torch.testing.assert_close(b[name], a[name], atol=ATOL, rtol=0, msg=lambda m, n=name: f"{n}: {m}")
    diff = max(float((a[k] - b[k]).abs().max()) for k in a if a[k].is_floating_point())
    print("max |2 processes - 1 process|:", diff)
    epoch1 = _weights(two / "checkpoints" / "checkpoint_epoch=1.pt")
    moved = max(float((epoch1[k] - b[k]).abs().max()) for k in b if b[k].is_floating_point())
    assert moved > 100 * ATOL  # the tolerance is small next to what training changes
    # ActNorm was initialised once from the global first batch, and is the same on both
    flags = [k for k in b if k.endswith("initialized")]
    assert flags and all(bool(b[k]) for k in flags)
    # rank 0 alone writes: one MLflow run, one set of checkpoints (epochs 1 and 2), one final and one best model
    runs = _mlflow_runs(two)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["checkpoint_epoch=1.pt", "checkpoint_epoch=2.pt"]
    assert {p.name for p in (two / "models").iterdir()} == {"model.pt", "model_final.pt", "key_metric.json"}
    assert "val_bpd" in runs[0].data.metrics and "train_loss" in runs[0].data.metrics
    # the training loss logged is the loss of the global batch: the same in both runs
    loss_one = [m.value for m in _history(one, "train_loss")]
    loss_two = [m.value for m in _history(two, "train_loss")]
    assert len(loss_two) == len(loss_one) > 0 and loss_two == pytest.approx(loss_one, rel=1e-4)
    assert log.stdout.count("Saved checkpoint at epoch: 2") + log.stderr.count("Saved checkpoint at epoch: 2") == 1


def test_init_weights_load_on_every_rank(tmp_path: Path) -> None:
    """``init_weights`` under torchrun (the multi-GPU overlay): two processes started from the file train exactly
    as one process does, so every rank loaded it (a rank on other weights would send other gradients), and with a
    learning rate of 0 the run ends with the file's weights."""
    first = tmp_path / "first"
    _torchrun(1, first, **{"train#batch_size": 2, "max_epochs": 1})
    weights = first / "models" / "model_final.pt"
    start = _weights(weights)
    frozen = _torchrun(2, tmp_path / "frozen", **{"train#batch_size": 1, "max_epochs": 1, "learning_rate": 0.0,
                                                  "init_weights": str(weights)})  # fmt: skip
    assert frozen.returncode == 0
    end = _weights(tmp_path / "frozen" / "models" / "model_final.pt")
    assert end.keys() == start.keys() and all(torch.equal(end[k], start[k]) for k in start)
    _torchrun(1, tmp_path / "one", **{"train#batch_size": 2, "init_weights": str(weights)})
    _torchrun(2, tmp_path / "two", **{"train#batch_size": 1, "init_weights": str(weights)})
    a = _weights(tmp_path / "one" / "models" / "model_final.pt")
    b = _weights(tmp_path / "two" / "models" / "model_final.pt")
    for name in a:
        if a[name].is_floating_point():
            torch.testing.assert_close(b[name], a[name], atol=ATOL, rtol=0, msg=lambda m, n=name: f"{n}: {m}")
    assert max(float((b[k] - start[k]).abs().max()) for k in b if b[k].is_floating_point()) > 100 * ATOL


def _history(out: Path, key: str) -> list:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{out}/mlruns.db")
    (run,) = _mlflow_runs(out)
    return sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (torchrun starts its workers in new sessions: a process-group kill misses them)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


CLI_TINY = {
    "synthetic_num_train": 5,
    "synthetic_num_test": 1,
    "synthetic_size": [66, 62],
    "num_val": 2,
    "num_samples": 1,
    "num_steps": 1,
    "hidden_channels": 8,
    "feature_channels": [4, 8],
    "dequantizer_kwargs": {"num_steps": 1, "hidden_channels": 8},
    "crop_size": [48, 48],
    "patch_size": [32, 32],
    "patches_per_image": 2,
    "train#batch_size": 2,
    "train#epoch_length": 3,
    "progress": False,
}


def _cnf_train(run: Path, *extra: str) -> list[str]:
    args = [sys.executable, "-m", "monai_cnf.cli", "train", str(BUNDLE), "--nproc-per-node", "2", "--device", "cpu"]
    args += ["--preset", "cpu", "--max-epochs", "20", "--run-dir", str(run), "--tracking-uri", f"sqlite:///{run}.db"]
    for key, value in CLI_TINY.items():
        args += ["-o", f"{key}={json.dumps(value)}"]
    return [*args, *extra]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find torchrun's workers")
def test_sigkilled_torchrun_run_resumes_and_finishes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = subprocess.Popen(_cnf_train(run), env=ENV, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    try:
        while not (run / "checkpoints" / "checkpoint_epoch=2.pt").exists():
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "no checkpoint within 180 s"
            time.sleep(0.05)
    finally:
        for pid in [proc.pid, *_descendants(proc.pid)]:  # cnf, torchrun's agent and both workers, at once
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    time.sleep(0.5)  # let the killed workers' pids go away
    killed_at = max(int(p.stem.split("=")[1]) for p in (run / "checkpoints").glob("checkpoint_epoch=*.pt"))
    assert killed_at < 20

    resume = _cnf_train(run, "--resume")
    done = subprocess.run(resume, env=ENV, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    final = torch.load(run / "checkpoints" / "checkpoint_epoch=20.pt", map_location="cpu", weights_only=True)
    assert final["trainer"]["iteration"] == 20 * 3  # 20 epochs x 3 iterations
    assert (run / "models" / "model_final.pt").is_file() and (run / "config_resume.json").is_file()
    assert "resuming from iteration" in done.stdout + done.stderr
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{run}.db")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # the same MLflow run, resumed and finished
    steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "train_loss")]
    assert max(steps) == 20 * 3  # iterations continue from the checkpoint: 20 epochs x 3 iterations


def test_super_resolution_bundle_trains_with_two_processes(tmp_path: Path) -> None:
    """The model zoo's line on the SR bundle (CPU preset, tiny): DistributedWeightedRandomSampler, gathered PSNR."""
    sr = ROOT / "bundles" / "super_resolution"
    out = tmp_path / "sr"
    configs = str([str(sr / "configs" / n) for n in ("train.json", "cpu.json", "multi_gpu_train.json")])
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    args += ["-m", "monai.bundle", "run", "--config_file", configs]
    tiny = {
        "bundle_root": str(sr), "output_dir": str(out), "tracking_uri": f"sqlite:///{out}.db", "device": "cpu",
        "num_val": 2, "num_samples": 1, "num_steps": 1, "hidden_channels": 8, "rrdb_blocks": 1,
        "rrdb_growth_channels": 4, "rrdb_feature_channels": 8, "patch_size": [16, 16], "val_crop": [32, 32],
        "dataset_repeats": 1, "train#batch_size": 2, "train#epoch_length": 2, "progress": False, "max_epochs": 2,
        # rank 0 still busy (as when it writes its MLflow model) when rank 1 reaches `finalize`: rank 1 must wait for
        # it, not tear its gloo group down and abort (CI saw that abort; torchrun then killed rank 0 mid-write)
        "finalize": [
            "$__import__('time').sleep(3.0 if monai_cnf.engines.is_main_process() else 0.0)",
            "$monai_cnf.engines.destroy_distributed(exit_worker=True)",
        ],
    }  # fmt: skip
    for key, value in tiny.items():
        args += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    proc = subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint_epoch=1.pt", "checkpoint_epoch=2.pt"]
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{out}.db")
    (run,) = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert run.info.status == "FINISHED" and "val_psnr_y" in run.data.metrics
