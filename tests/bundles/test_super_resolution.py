"""bundles/super_resolution runs with MONAI's bundle runner (no CLI): train on scikit-image's photos (CPU preset),
evaluate on a folder, infer at 2x with the padding undone, and the factored (discretized logistic) overlay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "super_resolution"
CONFIGS = BUNDLE / "configs"

TINY = {
    "bundle_root": str(BUNDLE),
    "num_val": 1,
    "num_samples": 2,
    "num_steps": 1,
    "hidden_channels": 8,
    "rrdb_blocks": 1,
    "rrdb_growth_channels": 4,
    "rrdb_feature_channels": 8,
    "patch_size": [16, 16],
    "val_crop": [32, 32],
    "dataset_repeats": 1,
    "train#batch_size": 2,
    "train#epoch_length": 2,
    "progress": False,
    "device": "cpu",
}
_DB: dict[str, str] = {}
pytestmark = pytest.mark.slow  # each module runs real (tiny) bundle workflows, one through a subprocess


def _files(*names: str) -> list[str]:
    return [str(CONFIGS / n) for n in names]


def _workflow(files: list[str], out: Path, **override):
    from monai.bundle import ConfigWorkflow

    over = {**TINY, "output_dir": str(out), "tracking_uri": _DB["uri"], **override}
    if files == _files("inference.json"):
        keep = ("bundle_root", "num_samples", "num_steps", "hidden_channels", "device", "output_dir")
        over = {k: v for k, v in over.items() if k in keep or k.startswith("rrdb_") or k in override}
    wf = ConfigWorkflow(
        config_file=files, meta_file=str(CONFIGS / "metadata.json"), logging_file=False, workflow_type=None, **over
    )
    wf.initialize()
    return wf


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """Two CPU-preset epochs on the default data (scikit-image's photos) via `python -m monai.bundle run`, with
    MONAI's own tracking switch (`--tracking mlflow`) on top of the bundle's tracking handlers."""
    out = tmp_path_factory.mktemp("sr_run")
    _DB["uri"] = f"sqlite:///{out}/mlruns.db"
    args = [sys.executable, "-m", "monai.bundle", "run", "--config_file", json.dumps(_files("train.json", "cpu.json"))]
    args += ["--tracking", "mlflow"]
    for key, value in {**TINY, "output_dir": str(out), "tracking_uri": _DB["uri"], "max_epochs": 2}.items():
        args += [f"--{key}", json.dumps(value) if not isinstance(value, str) else value]
    # the store is the one named here (an in-process CLI test may have left MLFLOW_TRACKING_URI set)
    env = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def hr_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hr")
    rng = np.random.default_rng(0)
    for i, shape in enumerate([(36, 44), (42, 30)]):
        # smooth, photo-like images (coarse noise, bicubic-upsampled): the model was trained on photos
        coarse = Image.fromarray(rng.integers(0, 256, (shape[0] // 6, shape[1] // 6, 3), dtype=np.uint8))
        coarse.resize((shape[1], shape[0]), Image.BICUBIC).save(folder / f"img{i}.png")
    return folder


def test_monai_tracking_switch_gives_one_run_each_metric_once_per_step(trained_run: Path) -> None:
    """`--tracking mlflow` appends MONAI's MLFlowHandler; the bundle's handler detaches it: one run, no repeats."""
    import mlflow

    client = mlflow.MlflowClient(_DB["uri"])
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert len(runs) == 1 and runs[0].info.status == "FINISHED", [r.info.run_name for r in runs]
    run_id = runs[0].info.run_id
    for key, steps in (("train_loss", 4), ("val_psnr_y", 2), ("val_bpd", 2)):
        history = [m.step for m in client.get_metric_history(run_id, key)]
        assert sorted(history) == sorted(set(history)) and len(history) == steps, (key, history)
    # hyperparameters as resolved values, without the CLI (`tracking_params` in train.json)
    params = runs[0].data.params
    assert params["learning_rate"] == "0.001" and params["batch_size"] == "2" and params["hidden_channels"] == "8"
    assert params["learned_shift"] == "True" and params["patch_size"] == "[16, 16]"
    # the size of the trained network, to compare runs (and the CNF with its baseline) in the MLflow UI
    assert params["num_parameters"] == str(sum(p.numel() for p in _tiny_cnf().parameters()))
    assert not [k for k, v in params.items() if v.startswith(("$", "@"))]


def _tiny_cnf() -> torch.nn.Module:
    """The CNF that the TINY settings build."""
    from monai_cnf.networks import ConditionalNormalizingFlow

    return ConditionalNormalizingFlow(
        2, 3, 3, num_levels=2, num_steps=1, hidden_channels=8, conditioner="rrdb", coupling="affine",
        dequantization="uniform", scale=2, residual=True, learned_shift=True,
        conditioner_kwargs={"num_blocks": 1, "growth_channels": 4, "feature_channels": 8},
    )  # fmt: skip


def test_train_checkpoints(trained_run: Path) -> None:
    assert sorted(p.name for p in (trained_run / "checkpoints").iterdir()) == [
        "checkpoint_epoch=1.pt",
        "checkpoint_epoch=2.pt",
    ]
    state = torch.load(trained_run / "checkpoints" / "checkpoint_epoch=2.pt", weights_only=True)
    assert state["trainer"]["iteration"] == 4
    _tiny_cnf().load_state_dict(torch.load(trained_run / "models" / "model.pt", weights_only=True))


def test_evaluate_on_a_folder(trained_run: Path, hr_folder: Path) -> None:
    """The standard protocol on a folder of HR images: mod-crop to the scale, pad for the flow, crop bits/dim."""
    crops = {"bpd_num_crops": 10, "bpd_crop_size": [16, 16], "val_crop": [-1, -1]}  # whole images
    wf = _workflow(_files("train.json", "cpu.json", "evaluate.json"), trained_run, eval_dir=str(hr_folder), **crops)
    wf.run()
    evaluator = wf.parser.get_parsed_content("validate#evaluator")
    metrics = evaluator.state.metrics
    from monai_cnf.bundle.workflows import _protocol

    protocol = _protocol(wf)  # what `cnf evaluate` prints beside the numbers
    wf.finalize()
    assert protocol["prediction scored"] == "mean of 2 samples at temperature 0"  # TINY has num_samples=2
    assert protocol["bpd_crops protocol"] == "bits per subpixel over 10 random 16x16 crops (the paper)"
    assert "divisible by 4" in protocol["bpd protocol"] and "2 px border" in protocol["psnr_y / ssim_y protocol"]
    assert set(metrics) >= {"psnr_y", "ssim_y", "bpd", "bpd_crops"}
    assert evaluator.state.iteration == 2  # both images of the folder
    assert 0 < metrics["psnr_y"] < 100 and -1 <= metrics["ssim_y"] <= 1
    assert 0 < metrics["bpd"] < 16 and 0 < metrics["bpd_crops"] < 16
    # the 42 x 30 image: the prediction is scored at its mod-2 size, padded to 44 x 32 for the flow and cropped back
    assert tuple(evaluator.state.output["pred"].shape[-2:]) == (42, 30)


def test_inference_upscales_by_two_and_undoes_padding(trained_run: Path, tmp_path: Path) -> None:
    lr = tmp_path / "lr"
    lr.mkdir()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (13, 10, 3), dtype=np.uint8)).save(lr / "a.png")
    out = tmp_path / "out"
    wf = _workflow(
        _files("inference.json"), out, checkpoint=str(trained_run / "models" / "model.pt"), input_dir=str(lr)
    )
    wf.run()
    wf.finalize()
    sr = np.asarray(Image.open(out / "a_x2.png"))
    assert sr.shape == (26, 20, 3) and sr.dtype == np.uint8  # 13x10 padded to 14x14, upscaled, cropped back


def test_factored_overlay(trained_run: Path, hr_folder: Path, tmp_path: Path) -> None:
    wf = _workflow(
        _files("train.json", "cpu.json", "factored.json"), tmp_path, dataset_dir=str(hr_folder), max_epochs=1
    )
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.model_kind == "factored" and type(trainer.network).__name__ == "FactoredBaseline"
    wf.run()
    wf.finalize()
    metrics = wf.parser.get_parsed_content("validate#evaluator").state.metrics
    assert np.isfinite(metrics["val_bpd"]) and metrics["val_psnr_y"] > 0


def test_imagenet_overlay_reads_npz_batches(trained_run: Path, tmp_path: Path) -> None:
    data = tmp_path / "imagenet16"
    rng = np.random.default_rng(2)
    for split, n in (("train", 6), ("val", 3)):
        (data / split).mkdir(parents=True)
        np.savez(
            data / split / f"{split}_data.npz",
            data=rng.integers(0, 256, (n, 3 * 16 * 16), dtype=np.uint8),
            labels=np.arange(1, n + 1),
        )
    wf = _workflow(
        _files("train.json", "cpu.json", "imagenet.json"),
        tmp_path / "run",
        dataset_dir=str(data),
        max_epochs=1,
        val_crop=[16, 16],
    )
    wf.run()
    wf.finalize()
    evaluator = wf.parser.get_parsed_content("validate#evaluator")
    assert evaluator.state.iteration == 1  # 3 validation images in one batch
    assert np.isfinite(evaluator.state.metrics["val_bpd"])


def test_inference_json_builds_the_shipped_cpu_preset_network() -> None:
    """inference.json alone (what MONAI Label reads) = the CPU preset's network (the shipped weights);
    inference_paper.json = train.json's paper network; inference_cpu.json changes no network size."""
    from monai.bundle import ConfigParser

    def net_shapes(files: list[str]) -> dict:
        parser = ConfigParser()
        parser.read_config(files)
        parser["bundle_root"] = str(BUNDLE)
        return {k: tuple(v.shape) for k, v in parser.get_parsed_content("network_def").state_dict().items()}

    cpu = net_shapes(_files("train.json", "cpu.json"))
    paper = net_shapes(_files("train.json"))
    assert cpu != paper
    assert net_shapes(_files("inference.json")) == cpu
    assert net_shapes(_files("inference.json", "inference_cpu.json")) == cpu
    assert net_shapes(_files("inference.json", "inference_paper.json")) == paper
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    assert meta["weights_preset"] == "cpu" and "optional_packages_version" not in meta


def _script(name: str):
    import importlib.util

    path = BUNDLE.parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bicubic_baseline_script_scores_like_cnf_evaluate(hr_folder: Path) -> None:
    result = _script("sr_bicubic_baseline").main([str(hr_folder)])
    assert result["images"] == 2 and 15 < result["psnr_y"] < 60 and 0 < result["ssim_y"] <= 1
