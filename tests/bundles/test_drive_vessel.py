"""bundles/drive_vessel runs with MONAI's own bundle runner (no CLI): train (CPU preset), resume, evaluate, infer,
the factored overlay and MONAI Label's train overrides — all on a tiny synthetic retina set and a tiny network."""

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

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "drive_vessel"
CONFIGS = BUNDLE / "configs"
SIZE = (66, 62)  # not divisible by 4: validation/inference pad, inference must undo it

TINY = {
    "bundle_root": str(BUNDLE),
    "synthetic_num_train": 3,
    "synthetic_num_test": 2,
    "synthetic_size": list(SIZE),
    "num_val": 1,
    "num_samples": 2,
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
    "device": "cpu",
}


def _files(*names: str) -> list[str]:
    return [str(CONFIGS / n) for n in names]


def _workflow(files: list[str], out: Path, **override):
    from monai.bundle import ConfigWorkflow

    over = {**TINY, "output_dir": str(out), "tracking_uri": _DB["uri"], **override}
    if files == _files("inference.json"):  # inference.json has no training keys
        over = {k: v for k, v in over.items() if not k.startswith("train#") and k != "tracking_uri"}
    wf = ConfigWorkflow(
        config_file=files, meta_file=str(CONFIGS / "metadata.json"), logging_file=False, workflow_type=None, **over
    )
    wf.initialize()
    return wf


_DB: dict[str, str] = {}
pytestmark = pytest.mark.slow  # each module runs real (tiny) bundle workflows, one through a subprocess


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """Two CPU-preset epochs through `python -m monai.bundle run` (the documented command, no CLI)."""
    out = tmp_path_factory.mktemp("drive_run")
    _DB["uri"] = f"sqlite:///{out}/mlruns.db"  # one MLflow store for the module: its schema is created once
    args = [sys.executable, "-m", "monai.bundle", "run", "--config_file", json.dumps(_files("train.json", "cpu.json"))]
    for key, value in {
        **TINY,
        "output_dir": str(out),
        "tracking_uri": f"sqlite:///{out}/mlruns.db",
        "max_epochs": 2,
    }.items():
        args += [f"--{key}", json.dumps(value) if not isinstance(value, str) else value]
    # the store is the one named here (an in-process CLI test may have left MLFLOW_TRACKING_URI set)
    env = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "SYNTHETIC retina set" in proc.stdout + proc.stderr  # it says it trains on synthetic data
    return out


def test_train_writes_checkpoints_and_plain_model(trained_run: Path) -> None:
    ckpts = sorted(p.name for p in (trained_run / "checkpoints").iterdir())
    assert ckpts == ["checkpoint_epoch=1.pt", "checkpoint_epoch=2.pt"]
    state = torch.load(trained_run / "checkpoints" / "checkpoint_epoch=2.pt", weights_only=True)
    assert set(state) == {"network", "optimizer", "lr_scheduler", "trainer"}
    assert state["trainer"]["iteration"] == 2 * 3
    # models/model.pt (best validation F) and model_final.pt are plain state_dicts of `network`
    from monai_cnf.networks import ConditionalNormalizingFlow

    net = ConditionalNormalizingFlow(
        2,
        3,
        1,
        num_levels=2,
        num_steps=1,
        hidden_channels=8,
        conditioner_kwargs={"feature_channels": [4, 8], "norm": "batch"},
        dequantizer_kwargs={"num_steps": 1, "hidden_channels": 8},
    )
    for name in ("model.pt", "model_final.pt"):
        net.load_state_dict(torch.load(trained_run / "models" / name, weights_only=True))
    final = torch.load(trained_run / "models" / "model_final.pt", weights_only=True)
    assert all(torch.equal(final[k], state["network"][k]) for k in final)  # final == last epoch's network
    assert (trained_run / "mlflow_run_id").is_file()


def test_training_registers_sampling_models_in_mlflow(trained_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each new best validation score and the end of training log the model into the run and register it."""
    import mlflow

    run_id = (trained_run / "mlflow_run_id").read_text().strip()
    client = mlflow.MlflowClient(_DB["uri"])
    versions = client.search_model_versions("name='drive_vessel-cnf'")
    assert len(versions) >= 2 and {v.run_id for v in versions} == {run_id}  # >= 1 best + the final model
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"model", "model_final"} <= artifacts
    latest = max(int(v.version) for v in versions)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", _DB["uri"])  # models:/ resolves against it (no global state left)
    served = mlflow.pyfunc.load_model(f"models:/drive_vessel-cnf/{latest}")
    x = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
    out = served.predict(x, params={"num_samples": 3, "return_samples": True})
    assert out["samples"].shape == (3, 1, 1, 32, 32) and set(np.unique(out["samples"])) <= {0.0, 1.0}


def test_resume_continues_epoch_count(trained_run: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    wf = _workflow(_files("train.json", "cpu.json"), run, resume=True, max_epochs=3)
    trainer = wf.parser.get_parsed_content("train#trainer")
    from ignite.engine import Events

    seen: list[int] = []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: seen.append(e.state.iteration))
    wf.run()
    wf.finalize()
    # resumed after epoch 2 (iteration 6): only epoch 3 ran, iterations 7, 8, 9
    assert seen == [7, 8, 9]
    assert trainer.state.epoch == 3 and trainer.state.iteration == 9
    assert (run / "checkpoints" / "checkpoint_epoch=3.pt").is_file()
    assert not (run / "checkpoints" / "checkpoint_epoch=1.pt").exists()  # n_saved=2 holds across the resume
    # the best validation score of epochs 1-2 was restored: epoch 3 replaces models/model.pt only if better
    best = json.loads((trained_run / "models" / "key_metric.json").read_text())
    saver = next(h for h in wf.parser.get_parsed_content("validate#handlers") if hasattr(h, "restored_best"))
    assert saver.restored_best == best and best["best_metric_epoch"] in (1, 2)
    evaluator = wf.parser.get_parsed_content("validate#evaluator")
    after = json.loads((run / "models" / "key_metric.json").read_text())
    assert after["best_metric"] == pytest.approx(max(best["best_metric"], evaluator.state.metrics["val_max_f"]))
    assert evaluator.state.best_metric == pytest.approx(after["best_metric"])


def test_evaluate_reports_metrics(trained_run: Path) -> None:
    wf = _workflow(_files("train.json", "cpu.json", "evaluate.json"), trained_run)
    wf.run()
    metrics = wf.parser.get_parsed_content("validate#evaluator").state.metrics
    wf.finalize()
    assert set(metrics) >= {"max_f", "bpd", "bpd_paper"}
    assert 0.0 < metrics["max_f"] <= 1.0 and np.isfinite(metrics["bpd"]) and metrics["bpd"] > 0
    # the paper's protocol pads the 66 x 62 label to 1024 x 1024 and counts every element: fewer bits/dim than the
    # headline's bits per real (in-FOV) pixel of the same model (easy zeros dilute it, even for this 2-epoch model)
    assert 0 < metrics["bpd_paper"] < metrics["bpd"]
    saved = dict(line.split(",") for line in (trained_run / "eval" / "test" / "metrics.csv").read_text().split())
    assert float(saved["max_f"]) == pytest.approx(metrics["max_f"])


def test_inference_returns_label_in_original_geometry(trained_run: Path, tmp_path: Path) -> None:
    wf = _workflow(
        _files("inference.json"),
        tmp_path,
        checkpoint=str(trained_run / "models" / "model.pt"),
        dataset_dir=str(trained_run / "synthetic_drive"),
        roi_size=[32, 32],  # sliding windows (as the CPU preset's 96 x 96 on DRIVE), stitched to the padded size
    )
    assert wf.parser.get_parsed_content("inferer").roi_size == [32, 32]
    wf.run()
    wf.finalize()
    outs = sorted(tmp_path.glob("*_seg.png"))
    assert [p.name for p in outs] == ["01_test_seg.png", "02_test_seg.png"]
    seg = np.asarray(Image.open(outs[0]))
    assert seg.shape == SIZE  # padding to 68x64 undone
    assert set(np.unique(seg)) <= {0, 255}
    # what MONAI Label's PNG writer receives: the last image's label as 2D uint8 {0, 1} in PIL's (x, y) order
    pred = np.asarray(wf.parser.get_parsed_content("evaluator").state.output[0]["pred"])
    assert pred.dtype == np.uint8 and pred.shape == SIZE[::-1]
    np.testing.assert_array_equal(pred, np.asarray(Image.open(outs[-1])).T // 255)


def test_inference_json_builds_the_shipped_cpu_preset_network() -> None:
    """inference.json alone (what MONAI Label's stock app reads) = the CPU preset's network (the shipped weights);
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

    def roi(files: list[str]) -> object:
        parser = ConfigParser()
        parser.read_config(files)
        return parser.get_parsed_content("roi_size")

    # one model at every size: the CPU preset trains on 64 x 64 patches and samples whole images, so nothing in its
    # networks (CNF and factored) normalises with statistics of its input; the paper preset keeps InstanceNorm
    assert roi(_files("inference.json")) is roi(_files("train.json", "cpu.json")) is None
    assert roi(_files("inference.json", "inference_paper.json")) is roi(_files("train.json")) is None
    assert roi(_files("train.json", "cpu.json", "factored.json")) is None

    def instance_norms(files: list[str]) -> int:
        parser = ConfigParser()
        parser.read_config(files)
        parser["bundle_root"] = str(BUNDLE)  # inference.json reads its network sizes from the bundle's presets
        net = parser.get_parsed_content("network_def")
        return sum(isinstance(m, torch.nn.modules.instancenorm._InstanceNorm) for m in net.modules())

    assert instance_norms(_files("train.json", "cpu.json")) == instance_norms(_files("inference.json")) == 0
    assert instance_norms(_files("train.json", "cpu.json", "factored.json")) == 0
    assert (
        instance_norms(_files("train.json")) > 0
        and instance_norms(_files("inference.json", "inference_paper.json")) > 0
    )

    # and it is local: a far change of the image leaves a pixel's conditioner features unchanged
    parser = ConfigParser()
    parser.read_config(_files("train.json", "cpu.json"))
    cnf = parser.get_parsed_content("network_def").eval()
    x = torch.rand(1, 3, 192, 192)
    far = x.clone()
    far[..., 160:, 160:] = 1.0 - far[..., 160:, 160:]
    with torch.no_grad():
        a, b = cnf.conditioner(x), cnf.conditioner(far)
    torch.testing.assert_close(a[-1][..., :16, :16], b[-1][..., :16, :16], rtol=0, atol=0)
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    assert meta["weights_preset"] == "cpu" and "optional_packages_version" not in meta


def test_factored_overlay_trains_the_baseline(trained_run: Path, tmp_path: Path) -> None:
    shutil_src = trained_run / "synthetic_drive"
    wf = _workflow(
        _files("train.json", "cpu.json", "factored.json"), tmp_path, dataset_dir=str(shutil_src), max_epochs=1
    )
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.model_kind == "factored"
    assert type(trainer.network).__name__ == "FactoredBaseline"
    from monai_cnf.bundle.workflows import _protocol

    # the factored model is scored on its exact soft image sigmoid(l), and the results table says so
    assert _protocol(wf)["prediction scored"] == "exact mean of its samples (closed form) at temperature 1"
    wf.run()
    wf.finalize()
    metrics = wf.parser.get_parsed_content("validate#evaluator").state.metrics
    assert 0.0 < metrics["val_max_f"] <= 1.0 and metrics["val_bpd"] > 0


def test_monai_label_style_overrides(trained_run: Path, tmp_path: Path) -> None:
    """MONAI Label's BundleTrainTask: own datalist, max_epochs, a CheckpointLoader prepended to train#handlers."""
    from monai_cnf.data import drive_datalist

    items = [{"image": d["image"], "label": d["label"]} for d in drive_datalist(trained_run / "synthetic_drive")][:2]
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(_files("train.json", "cpu.json"))
    handlers = parser["train#handlers"]
    loader = {
        "_target_": "CheckpointLoader",
        "load_path": str(trained_run / "models" / "model.pt"),
        "load_dict": {"model": "@network"},
        "strict": False,
    }
    over = {
        "train#dataset#data": items,
        "validate#datalist": items[:1],  # MONAI Label's val_split items: no FOV "mask", no override needed
        "train#trainer#max_epochs": 1,
        "train#handlers": [loader, *handlers],
        "dataset_dir": str(trained_run / "synthetic_drive"),
    }
    wf = _workflow(_files("train.json", "cpu.json"), tmp_path, **over)
    wf.run()
    wf.finalize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 1 and trainer.state.iteration == 3
    assert 0.0 < wf.parser.get_parsed_content("validate#evaluator").state.metrics["val_max_f"] <= 1.0


def test_learning_rate_schedule_keys() -> None:
    """train.json: the paper's constant rate; cpu.json: warm-up; lr_decay_* add a cosine decay (what the shipped
    weights' last phase used)."""
    from monai.bundle import ConfigParser

    def lrs(files: list[str], steps: list[int], **overrides) -> list[float]:
        parser = ConfigParser()
        parser.read_config(files)
        parser.update({"bundle_root": str(BUNDLE), "network_def": "$torch.nn.Linear(1, 1)", **overrides})
        factor = parser.get_parsed_content("lr_scheduler").lr_lambdas[0]
        return [parser["learning_rate"] * factor(s) for s in steps]

    assert lrs(_files("train.json"), [0, 10**6]) == [1e-3, 1e-3]
    warm = lrs(_files("train.json", "cpu.json"), [0, 100, 200, 10**6])
    assert warm == pytest.approx([1e-5, 1e-3 * (0.01 + 0.99 * 0.5), 1e-3, 1e-3])
    decay = lrs(_files("train.json", "cpu.json"), [200, 1200, 2200, 9999], lr_decay_start=200, lr_decay_steps=2000)
    assert decay == pytest.approx([1e-3, 1e-3 * 0.505, 1e-5, 1e-5])


def test_conditioner_key_selects_one_conditioner_for_both_models(tmp_path: Path) -> None:
    """`conditioner` builds the same conditioning network in the CNF, the factored baseline and inference.json;
    weights recorded with it in models/provenance.json load through the one loader."""
    import shutil

    from monai.bundle import ConfigParser

    from monai_cnf.bundle import WeightsMismatchError, load_bundle, load_trained
    from monai_cnf.networks import UNetConditioner, VGGConditioner

    def network(files: list[str], **keys):
        parser = ConfigParser()
        parser.read_config(files)
        parser.update({"bundle_root": str(BUNDLE), **keys})
        return parser.get_parsed_content("network_def")

    for files in (_files("train.json", "cpu.json"), _files("train.json", "cpu.json", "factored.json")):
        assert isinstance(network(files).conditioner, VGGConditioner)  # the default: the paper's VGG
        assert isinstance(network(files, conditioner="unet").conditioner, UNetConditioner)
    unet = network(_files("train.json", "cpu.json"), conditioner="unet")
    inference = network(_files("inference.json"), conditioner="unet")
    assert {k: v.shape for k, v in inference.state_dict().items()} == {k: v.shape for k, v in unet.state_dict().items()}

    bundle = tmp_path / "drive_vessel"
    shutil.copytree(CONFIGS, bundle / "configs")
    (bundle / "models").mkdir()
    torch.save(unet.state_dict(), bundle / "models" / "model.pt")
    load_bundle(bundle).record_weights(bundle / "models" / "model.pt", "cpu", "cnf", {"conditioner": "unet"})
    trained = load_trained(bundle)
    assert isinstance(trained.network.conditioner, UNetConditioner)
    torch.testing.assert_close(trained.network.state_dict(), unet.state_dict())
    load_bundle(bundle).record_weights(bundle / "models" / "model.pt", "cpu", "cnf")  # the key forgotten: refused
    with pytest.raises(WeightsMismatchError, match="does not fit"):
        load_trained(bundle)


def test_equalize_contrast_key_adds_clahe_to_every_whole_image_loader() -> None:
    """`equalize_contrast` puts CLAHE on the whole image in training (before the random crops), validation and
    inference.json, for both models; off by default (the shipped weights see the image as loaded)."""
    from monai.bundle import ConfigParser

    from monai_cnf.transforms import AdaptiveHistogramEqualized

    def names(files: list[str], key: str, **keys) -> list[str]:
        parser = ConfigParser()
        parser.read_config(files)
        parser.update({"bundle_root": str(BUNDLE), **keys})
        value = parser.get_parsed_content(key)
        return [type(t).__name__ for t in (value.transforms if hasattr(value, "transforms") else value)]

    clahe = AdaptiveHistogramEqualized.__name__
    for files in (
        _files("train.json"),
        _files("train.json", "cpu.json"),
        _files("train.json", "cpu.json", "factored.json"),
    ):
        for key in ("train#preprocessing_transforms", "validate#preprocessing#transforms"):
            assert clahe not in names(files, key)
            on = names(files, key, equalize_contrast=True)
            assert on.index(clahe) == on.index("BinarizeLabeld") + 1  # right after loading: before crops and pads
    assert clahe not in names(_files("inference.json"), "preprocessing")
    on = names(_files("inference.json"), "preprocessing", equalize_contrast=True)
    assert on.index(clahe) == on.index("ScaleIntensityRanged") + 1
