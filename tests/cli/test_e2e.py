"""End to end on the DRIVE bundle, in a temp dir with its own SQLite store (issue 5, proof):

train (a subprocess, tiny overrides on the synthetic retina set) -> SIGKILL after the first checkpoint ->
``--resume`` (the same MLflow run, the trainer's epoch restored) -> ``cnf sample`` (PNG + NIfTI) ->
``cnf evaluate`` (an MLflow run linked to the training run); plus a dataset folder in the wrong layout.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import nibabel as nib
import numpy as np
import pytest
import torch
from monai_cnf.cli.main import app
from PIL import Image
from typer.testing import CliRunner

from monai_cnf.tracking import EVAL_RUN_ID_FILE, read_run_id

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bundles" / "drive_vessel"
NEEDED = ("metadata.json", "train.json", "cpu.json", "inference.json", "evaluate.json")
# 3 synthetic 34x33 training images (1 held out; 33 is not divisible by 4: the pad is undone), 2 test images,
# a 1-step flow with 8 hidden channels,
# 2 iterations per epoch, 2 samples per validation image
TINY = [
    "-o", "synthetic_num_train=3", "-o", "synthetic_num_test=2", "-o", "num_val=1", "-o", "synthetic_size=[34,33]",
    "-o", "crop_size=[32,32]", "-o", "patch_size=[32,32]", "-o", "patches_per_image=1",
    "-o", "network_def#num_steps=1", "-o", "network_def#hidden_channels=8",
    "-o", 'network_def#conditioner_kwargs={"feature_channels":[4,8]}',
    "-o", "train#epoch_length=2", "-o", "train#batch_size=2", "-o", "num_samples=2", "-o", "warmup_steps=1",
    "-o", "progress=false",
]  # fmt: skip
SEEDED = ["--num-samples", "3", "--temperature", "0.8", "--seed", "0"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not all((BUNDLE / "configs" / f).is_file() for f in NEEDED),
        reason=f"the DRIVE bundle is incomplete (needs configs/{', '.join(NEEDED)})",
    ),
]


def _epoch(path: Path) -> int:
    m = re.search(r"epoch=(\d+)\.pt$", path.name)
    return int(m.group(1)) if m else -1


def _invoke(args: list[str]) -> object:
    result = CliRunner().invoke(app, args, terminal_width=200)
    assert result.exit_code == 0, f"{args[0]} failed:\n{result.output}\n{result.exception!r}"
    return result


def test_train_kill_resume_sample_evaluate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # the CLI sets it in-process; restored after the test
    run_dir = tmp_path / "run"
    common = ["--preset", "cpu", "--device", "cpu", "--run-dir", str(run_dir), "--tracking-uri", uri]

    # 1. train in a subprocess and SIGKILL it once a checkpoint exists
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(MLFLOW_DISABLE_TELEMETRY="true", OMP_NUM_THREADS="2")
    cmd = [sys.executable, "-m", "monai_cnf.cli", "train", str(BUNDLE), *common, "--max-epochs", "1000", *TINY]
    log = tmp_path / "train.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        while not list((run_dir / "checkpoints").glob("checkpoint_epoch=*.pt")):
            assert proc.poll() is None, f"training ended early:\n{log.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"no checkpoint after 240 s:\n{log.read_text()[-4000:]}"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    # one log style: no line in MONAI's ("2026-12-02 03:21:38,150 - INFO - ...") or MLflow's own format, no raw
    # Python warnings; MONAI's StatsHandler lines come through Rich
    foreign = re.compile(r"^\d{4}[-/]\d\d[-/]\d\d \d\d:\d\d:\d\d|Warning: ", re.MULTILINE)
    assert not foreign.findall(log.read_text()), log.read_text()[-4000:]
    ckpts = sorted((run_dir / "checkpoints").glob("checkpoint_epoch=*.pt"), key=_epoch)
    for ckpt in ckpts:  # written atomically: every file on disk is complete
        assert set(torch.load(ckpt, map_location="cpu", weights_only=True)) >= {"network", "optimizer", "trainer"}
    last = _epoch(ckpts[-1])
    run_id = read_run_id(run_dir)
    client = mlflow.MlflowClient(uri)
    assert run_id is not None and client.get_run(run_id).info.status == "RUNNING"  # killed: never closed

    # 2. nothing already written is lost: a fresh training into the same folder is refused
    before = {p: p.read_bytes() for p in ckpts}
    refused = CliRunner().invoke(app, ["train", str(BUNDLE), *common, *TINY])
    assert refused.exit_code == 1 and "--resume" in refused.stderr
    assert {p: p.read_bytes() for p in ckpts} == before

    # 3. resume: same MLflow run, continues after the last checkpoint's epoch
    resumed_at_ms = int(time.time() * 1000)
    # settings changed at resume: evaluation and sampling must see them (40 x 40 windows: the 36 x 36 padded
    # images fit in one, so the numbers below stay exact)
    resume_only = ["-o", "sample_chunk_size=3", "-o", "roi_size=[40,40]"]
    _invoke(["train", str(BUNDLE), *common, "--resume", "--max-epochs", str(last + 1), *TINY, *resume_only])
    assert read_run_id(run_dir) == run_id
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run_id, "train_loss_epoch")
    killed = [m.step for m in history if m.timestamp < resumed_at_ms]
    resumed = [m.step for m in history if m.timestamp >= resumed_at_ms]
    # SIGKILL lands at a random point: the killed process may have logged epochs past its last checkpoint (they
    # are redone after the resume) or not yet logged the checkpoint's epoch. What must hold: each process logs
    # every epoch once, in order, and the resumed one starts right after the checkpoint's epoch.
    assert killed == list(range(1, len(killed) + 1)), killed
    assert resumed == [last + 1], resumed
    assert [m.step for m in client.get_metric_history(run_id, "val_max_f")][-1] == last + 1
    assert (run_dir / "checkpoints" / f"checkpoint_epoch={last + 1}.pt").is_file()
    assert run.data.tags["bundle"] == "drive_vessel" and run.data.tags["model"] == "cnf"
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode == 0:  # a git checkout: the run records the code's commit
        assert run.data.tags["mlflow.source.git.commit"] == head.stdout.strip()
    assert run.data.params["network_def::hidden_channels"] == "8"
    from monai_cnf.bundle.loading import load_trained

    trained = load_trained(BUNDLE, run_dir=run_dir, workflow="evaluate").network  # the network the run trained
    assert run.data.params["num_parameters"] == str(sum(p.numel() for p in trained.parameters()))
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"checkpoints", "models", "config.json", "samples"} <= artifacts, artifacts
    assert f"checkpoints/checkpoint_epoch={last + 1}.pt" in {
        a.path for a in client.list_artifacts(run_id, "checkpoints")
    }

    # 4. sample: PNG and NIfTI maps of the test image's size (34 x 33, padded to 36 x 36 inside)
    image = run_dir / "synthetic_drive" / "test" / "images" / "01_test.tif"
    out = tmp_path / "samples"
    sample_args = ["--input", str(image), "--run-dir", str(run_dir), "--output", str(out), "--device", "cpu"]
    sampled = _invoke(["sample", str(BUNDLE), *sample_args, *SEEDED])
    assert "40 x 40 sliding windows" in sampled.stdout  # the run's windows, not inference.json's 96 x 96
    h, w = np.asarray(Image.open(image)).shape[:2]
    assert (h, w) == (34, 33)
    for name in ("sample_000.png", "sample_002.png", "mean.png", "std.png"):
        png = np.asarray(Image.open(out / name))
        assert png.shape == (h, w) and png.dtype == np.uint8, name
    binary = np.asarray(Image.open(out / "sample_001.png"))
    assert set(np.unique(binary)) <= {0, 255}
    samples = np.asarray(nib.load(out / "samples.nii.gz").dataobj)
    assert samples.shape == (h, w, 3) and set(np.unique(samples)) <= {0, 1}
    mean = nib.load(out / "mean.nii.gz").get_fdata()
    np.testing.assert_allclose(mean, samples.mean(-1), atol=1e-6)  # the mean map is the mean of the samples
    std = nib.load(out / "std.nii.gz").get_fdata()
    np.testing.assert_allclose(std, samples.std(-1), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(Image.open(out / "sample_001.png")), samples[..., 1] * 255)
    again = tmp_path / "samples_again"  # the same seed gives the same samples
    sample_args[sample_args.index(str(out))] = str(again)
    sampled = _invoke(["sample", str(BUNDLE), *sample_args, *SEEDED])
    assert "40 x 40 sliding windows" in sampled.stdout  # the run's windows, not inference.json's 96 x 96
    np.testing.assert_array_equal(np.asarray(nib.load(again / "samples.nii.gz").dataobj), samples)

    # 5. evaluate the run on the test split: an MLflow run linked to the training run
    _invoke(["evaluate", str(BUNDLE), *common, "--split", "test", "--num-samples", "2"])
    eval_id = read_run_id(run_dir, EVAL_RUN_ID_FILE)
    assert eval_id is not None and eval_id != run_id
    ev = client.get_run(eval_id)
    assert ev.data.tags["mlflow.parentRunId"] == run_id and ev.info.status == "FINISHED"
    assert ev.data.tags["split"] == "test"
    assert {"max_f", "bpd"} <= set(ev.data.metrics), ev.data.metrics
    assert 0.0 <= ev.data.metrics["max_f"] <= 1.0 and ev.data.metrics["bpd"] > 0
    # evaluated with the config of the latest resume (config_resume.json), not the first start's config.json
    assert json.loads((run_dir / "config.json").read_text())["sample_chunk_size"] != 3
    assert json.loads((run_dir / "config_evaluate_test.json").read_text())["sample_chunk_size"] == 3


def test_dataset_in_the_wrong_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    wrong = tmp_path / "not_drive"
    (wrong / "pictures").mkdir(parents=True)
    (wrong / "pictures" / "a.png").write_bytes(b"")
    args = ["train", str(BUNDLE), "--preset", "cpu", "--device", "cpu", "--run-dir", str(tmp_path / "run")]
    args += ["--dataset-dir", str(wrong), *TINY]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and "layout" in lines[0] and str(wrong) in lines[0], result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("name", ["drive_vessel", "super_resolution"])
def test_shipped_bundles_verify(name: str) -> None:
    bundle = ROOT / "bundles" / name
    if not (bundle / "configs" / "metadata.json").is_file():
        pytest.skip(f"bundles/{name} has no configs/metadata.json yet")
    result = CliRunner().invoke(app, ["bundle", "verify", str(bundle)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "FAIL" not in result.stdout and "forward pass" in result.stdout


def test_sample_super_resolution(tmp_path: Path) -> None:
    """SR: an RGB LR image of odd size gives 2x PNG/NIfTI maps (padding cropped), integer samples in 0..255."""
    bundle = ROOT / "bundles" / "super_resolution"
    if not (bundle / "configs" / "inference.json").is_file():
        pytest.skip("bundles/super_resolution has no configs/inference.json yet")
    from monai.bundle import ConfigParser

    tiny = {"num_steps": 1, "hidden_channels": 8, "rrdb_blocks": 1, "rrdb_growth_channels": 4}
    tiny.update(rrdb_feature_channels=8, bundle_root=str(bundle))  # the other sizes come from the bundle's presets
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser.update(tiny)
    torch.save(parser.get_parsed_content("network_def").state_dict(), tmp_path / "tiny_sr.pt")
    lr = (np.random.default_rng(0).random((13, 10, 3)) * 255).astype(np.uint8)  # H=13, W=10: padded inside
    Image.fromarray(lr).save(tmp_path / "lr.png")
    out = tmp_path / "sr"
    args = ["sample", str(bundle), "--input", str(tmp_path / "lr.png"), "--checkpoint", str(tmp_path / "tiny_sr.pt")]
    args += ["--output", str(out), "--num-samples", "2", "--temperature", "0.5", "--seed", "0", "--device", "cpu"]
    _invoke(args + [a for k, v in tiny.items() for a in ("-o", f"{k}={v}")])
    for name in ("sample_000.png", "sample_001.png", "mean.png", "std.png"):
        png = np.asarray(Image.open(out / name))
        assert png.shape == (26, 20, 3) and png.dtype == np.uint8, name
    samples = np.asarray(nib.load(out / "samples.nii.gz").dataobj)
    assert samples.shape == (26, 20, 3, 2) and samples.dtype == np.uint8  # integer values in 0..255
    np.testing.assert_array_equal(np.asarray(Image.open(out / "sample_000.png")), samples[..., 0])  # value_range 0..255
    np.testing.assert_allclose(nib.load(out / "mean.nii.gz").get_fdata(), samples.mean(-1), atol=1e-4)
