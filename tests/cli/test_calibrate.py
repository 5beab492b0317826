"""``cnf calibrate`` end to end on the DRIVE bundle with tiny networks on a tiny synthetic retina set (issue 6).

Both networks are built from the bundle's own configs (train.json + cpu.json [+ factored.json]) with tiny overrides,
their freshly initialised state_dicts and resolved configs saved into "training run" folders as `cnf train` leaves
them, with MLflow run ids; the command must rebuild the networks from those configs, find the weights, write valid
PNGs, log finite in-range metrics, the PNGs as artifacts and the link tags.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import typer
from monai_cnf.cli.calibrate import calibrate
from PIL import Image
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bundles" / "drive_vessel"
NEEDED = ("metadata.json", "train.json", "cpu.json", "factored.json", "evaluate.json")
# 2 synthetic 34x33 test images (neither is divisible by 4: the pad must be undone), 1-step flow, 8 hidden channels
OVERRIDES = {
    "synthetic_num_train": 1,
    "synthetic_num_test": 2,
    "synthetic_size": [34, 33],
    "num_steps": 1,
    "hidden_channels": 8,
    "feature_channels": [4, 8],
    "dequantizer_kwargs": {"num_steps": 1, "hidden_channels": 4},
}
CLI_OVERRIDES = [a for k, v in OVERRIDES.items() for a in ("-o", f"{k}={json.dumps(v)}")]

pytestmark = pytest.mark.skipif(
    not all((BUNDLE / "configs" / f).is_file() for f in NEEDED),
    reason=f"the DRIVE bundle is incomplete (needs configs/{', '.join(NEEDED)})",
)


def _app() -> typer.Typer:
    """``cnf`` itself once main.py registers the command, else a Typer app holding just ``calibrate``."""
    from monai_cnf.cli.main import app

    if any(getattr(c.callback, "__name__", "") == "calibrate" for c in app.registered_commands):
        return app
    local = typer.Typer()
    local.callback()(lambda: None)
    local.command()(calibrate)
    return local


def _network(kind: str) -> torch.nn.Module:
    from monai.bundle import ConfigParser

    files = ["train.json", "cpu.json"] + (["factored.json"] if kind == "factored" else [])
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / f) for f in files])
    parser.update(OVERRIDES)
    return parser.get_parsed_content("network_def")


def _training_run(folder: Path, kind: str, client: mlflow.MlflowClient, exp_id: str) -> tuple[str, torch.nn.Module]:
    """A run folder as `cnf train` leaves it: the resolved config.json, models/model.pt and the MLflow run id."""
    from monai_cnf.bundle import RunFolder, load_bundle
    from monai_cnf.bundle.workflows import export_config, make_workflow

    bundle = load_bundle(BUNDLE)
    settings = {**OVERRIDES, "bundle_root": str(BUNDLE), "output_dir": str(folder)}
    workflow = make_workflow(bundle, bundle.config_files("train", "cpu", kind), settings, {})
    RunFolder(folder).write_provenance(bundle="drive_vessel", preset="cpu", model=kind)
    export_config(workflow, folder / "config.json")
    net = workflow.parser.get_parsed_content("network_def")
    (folder / "models").mkdir(parents=True)
    torch.save(net.state_dict(), folder / "models" / "model.pt")
    run_id = client.create_run(exp_id, run_name=f"train-{kind}").info.run_id
    (folder / "mlflow_run_id").write_text(run_id + "\n")
    return run_id, net.eval()


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, mlflow.MlflowClient, str]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = mlflow.MlflowClient(uri)
    exp_id = client.create_experiment("drive_vessel", artifact_location=(tmp_path / "mlartifacts").as_uri())
    return uri, client, exp_id


def _in_range(metrics: dict[str, float]) -> None:
    for key, value in metrics.items():
        assert math.isfinite(value), key
        name = key.split("/", 1)[1]
        if name == "ged":
            assert -1e-9 <= value <= 2.0, (key, value)
        elif name == "bits_per_dim":
            assert value > 0, (key, value)
        else:  # F, precision, recall, thresholds, ECE, IoU
            assert 0.0 <= value <= 1.0, (key, value)


def test_calibrate_end_to_end(tmp_path: Path, store: tuple[str, mlflow.MlflowClient, str]) -> None:
    uri, client, exp_id = store
    cnf_run, _ = _training_run(tmp_path / "run_cnf", "cnf", client, exp_id)
    fac_run, fac_net = _training_run(tmp_path / "run_fac", "factored", client, exp_id)
    out = tmp_path / "calib"
    args = ["calibrate", str(BUNDLE), "--run-dir", str(tmp_path / "run_cnf"), "--factored-run-dir"]
    args += [str(tmp_path / "run_fac"), "--num-samples", "5", "--chunk-size", "2", "--output", str(out)]
    # no --override: both networks and the data settings come from the run folders' resolved config.json
    args += ["--device", "cpu", "--preset", "paper", "--tracking-uri", uri, "--no-progress"]
    result = CliRunner().invoke(_app(), args, terminal_width=200)
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    assert "cnf calibrate drive_vessel" in result.stdout and "max_f" in result.stdout  # the Rich table

    # every plot is a valid PNG: PR curves, PR scatter, reliability, 2 sample grids
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert {"pr_curves.png", "pr_scatter.png", "reliability.png"} <= set(pngs) and len(pngs) == 5, pngs
    for name in pngs:
        with Image.open(out / name) as img:
            img.verify()
        with Image.open(out / name) as img:
            assert img.format == "PNG" and min(img.size) > 50

    # the MLflow run: metrics finite and in range, artifacts = the PNGs, linked to both training runs
    run_id = (out / "mlflow_calibration_run_id").read_text().strip()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.experiment_id == exp_id
    metrics = run.data.metrics
    expected = {f"{m}/{k}" for m in ("cnf", "factored") for k in ("max_f", "ece", "ged", "hm_iou", "bits_per_dim")}
    assert expected | {"observer2/f"} <= set(metrics), sorted(metrics)
    _in_range(metrics)
    tags = run.data.tags
    assert tags["mlflow.parentRunId"] == cnf_run and tags["cnf.training_run_id"] == cnf_run
    assert tags["cnf.factored_training_run_id"] == fac_run and tags["cnf.mode"] == "calibrate"
    assert run.data.params["num_samples"] == "5" and run.data.params["split"] == "test"
    artifacts = {a.path for a in client.list_artifacts(run_id, "calibration")}
    assert artifacts == {f"calibration/{p}" for p in [*pngs, "per_image.csv"]}, artifacts

    # numbers from independent formulas on the same files (the synthetic set generated in the CNF run folder)
    from monai.transforms import Compose, DivisiblePadd

    from monai_cnf.data import drive_datalist, drive_load_transforms

    datalist = drive_datalist(tmp_path / "run_cnf" / "synthetic_drive", "test")
    assert len(datalist) == 2
    load = Compose(drive_load_transforms(["image", "label", "mask", "label2"]))
    tp = pred = bpd = 0.0
    pos = 0.0
    for item in datalist:
        d = load(item)
        ref, o2, fov = (d[k][0].numpy() > 0 for k in ("label", "label2", "mask"))
        tp += np.sum(o2 & ref & fov)
        pred += np.sum(o2 & fov)
        pos += np.sum(ref & fov)
        padded = DivisiblePadd(["image", "label", "mask"], k=4)({k: d[k] for k in ("image", "label", "mask")})
        x, y, m = (padded[k][None].float() for k in ("image", "label", "mask"))
        assert tuple(y.shape[2:]) == (36, 36)
        with torch.no_grad():  # bits per real pixel: the sum over the FOV (zero in the padding), over its size
            nats = float(-fac_net.log_prob(y, x, mask=m)[0])
            bpd += nats / (float((m > 0.5).sum()) * math.log(2.0)) / len(datalist)
    p, r = tp / pred, tp / pos
    assert metrics["observer2/f"] == pytest.approx(2 * p * r / (p + r), rel=1e-6)
    assert metrics["factored/bits_per_dim"] == pytest.approx(bpd, rel=1e-5)
    # CNF vs factored is one filter: a child run per model, same metric names, tag `model`
    kids = client.search_runs([run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'")
    assert sorted(k.data.tags["model"] for k in kids) == ["cnf", "factored"]
    for kid in kids:
        assert kid.data.metrics["max_f"] == metrics[f"{kid.data.tags['model']}/max_f"]

    # the per-image table is written next to the plots
    assert (out / "per_image.csv").read_text().count("\n") == 1 + 2 * 2  # header + 2 images x 2 models


def test_clear_errors(tmp_path: Path, store: tuple[str, mlflow.MlflowClient, str]) -> None:
    uri = store[0]
    base = ["calibrate", str(BUNDLE), "--device", "cpu", "--preset", "cpu", "--tracking-uri", uri]
    base += ["--output", str(tmp_path / "calib"), *CLI_OVERRIDES]

    def error(args: list[str]) -> str:
        result = CliRunner().invoke(_app(), [*base, *args])
        assert result.exit_code == 1, result.output
        lines = [ln for ln in result.stderr.splitlines() if ln.startswith("Error: ")]
        assert len(lines) == 1 and "Traceback" not in result.output, result.output
        return lines[0]

    # a missing checkpoint: names the file and the command that creates it
    missing = tmp_path / "nowhere" / "model.pt"
    line = error(["--cnf-checkpoint", str(missing)])
    assert str(missing) in line and "does not exist" in line and "cnf train" in line

    # an empty factored run folder and no shipped baseline weights (a copy of the bundle without them): says which
    # folder and `cnf train --model factored`
    bare = tmp_path / "bare_bundle"
    shutil.copytree(BUNDLE, bare, ignore=shutil.ignore_patterns("model_factored.pt", "figures"))
    torch.save(_network("cnf").state_dict(), tmp_path / "cnf.pt")
    args = ["--cnf-checkpoint", str(tmp_path / "cnf.pt"), "--factored-run-dir", str(tmp_path / "empty")]
    result = CliRunner().invoke(_app(), [base[0], str(bare), *base[2:], *args])
    assert result.exit_code == 1, result.output
    line = next(ln for ln in result.stderr.splitlines() if ln.startswith("Error: "))
    assert str(tmp_path / "empty") in line and "--model factored" in line, line

    # wrong layout: a factored training run given as the CNF's run folder
    wrong = tmp_path / "factored_run"
    (wrong / "models").mkdir(parents=True)
    torch.save(_network("factored").state_dict(), wrong / "models" / "model.pt")
    (wrong / "config.json").write_text(json.dumps({"model_kind": "factored"}))
    line = error(["--run-dir", str(wrong), "--factored-checkpoint", str(wrong / "models" / "model.pt")])
    assert "as the factored run folder" in line and str(wrong) in line

    # weights that do not fit the network built from the configs
    torch.save(_network("factored").state_dict(), tmp_path / "fac.pt")
    line = error(["--cnf-checkpoint", str(tmp_path / "fac.pt"), "--factored-checkpoint", str(tmp_path / "fac.pt")])
    assert str(tmp_path / "fac.pt") in line and "does not fit the ConditionalNormalizingFlow of" in line

    # a dataset folder in the wrong layout: one line naming the folder and the expected layout
    torch.save(_network("cnf").state_dict(), tmp_path / "cnf_ok.pt")
    wrong_data = tmp_path / "not_drive"
    (wrong_data / "pictures").mkdir(parents=True)
    ok = ["--cnf-checkpoint", str(tmp_path / "cnf_ok.pt"), "--factored-checkpoint", str(tmp_path / "fac.pt")]
    line = error([*ok, "--dataset-dir", str(wrong_data)])
    assert "layout" in line and str(wrong_data) in line


SR_BUNDLE = ROOT / "bundles" / "super_resolution"
SR_OVERRIDES = {
    "num_steps": 1,
    "hidden_channels": 8,
    "rrdb_blocks": 1,
    "rrdb_growth_channels": 4,
    "rrdb_feature_channels": 8,
    "num_val": 1,
    "val_crop": [32, 32],
}


@pytest.mark.skipif(
    not all((SR_BUNDLE / "configs" / f).is_file() for f in NEEDED), reason="the SR bundle is incomplete"
)
def test_calibrate_super_resolution(tmp_path: Path, store: tuple[str, mlflow.MlflowClient, str]) -> None:
    from monai.bundle import ConfigParser

    uri, client, _ = store
    for kind in ("cnf", "factored"):
        parser = ConfigParser()
        files = ["train.json", "cpu.json"] + (["factored.json"] if kind == "factored" else [])
        parser.read_config([str(SR_BUNDLE / "configs" / f) for f in files])
        parser.update(SR_OVERRIDES)
        torch.save(parser.get_parsed_content("network_def").state_dict(), tmp_path / f"{kind}.pt")
    out = tmp_path / "calib"
    args = ["calibrate", str(SR_BUNDLE), "--cnf-checkpoint", str(tmp_path / "cnf.pt"), "--factored-checkpoint"]
    args += [str(tmp_path / "factored.pt"), "--output", str(out), "--device", "cpu", "--preset", "cpu"]
    args += ["--tracking-uri", uri, "--no-progress"]
    args += [a for k, v in SR_OVERRIDES.items() for a in ("-o", f"{k}={json.dumps(v)}")]
    result = CliRunner().invoke(_app(), args, terminal_width=200)
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    pngs = list(out.glob("temperature_sweep_*.png"))
    assert len(pngs) == 1
    with Image.open(pngs[0]) as img:
        img.verify()
    metrics = client.get_run((out / "mlflow_calibration_run_id").read_text().strip()).data.metrics
    for m in ("cnf", "factored"):
        for tau in ("0", "0.5", "0.8", "1"):
            assert math.isfinite(metrics[f"{m}/psnr_y_t{tau}"]) and metrics[f"{m}/psnr_y_t{tau}"] > 0
            assert -1.0 <= metrics[f"{m}/ssim_y_t{tau}"] <= 1.0
        assert metrics[f"{m}/bits_per_dim"] > 0 and math.isfinite(metrics[f"{m}/bits_per_dim"])
    # one child run per temperature: the UI plots cnf/psnr_y against the `temperature` param
    parent = (out / "mlflow_calibration_run_id").read_text().strip()
    exp = client.get_run(parent).info.experiment_id
    children = client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    by_model = [r for r in children if r.data.tags["cnf.mode"] == "calibrate-model"]
    assert sorted(r.data.tags["model"] for r in by_model) == ["cnf", "factored"]
    for child in by_model:  # the same metric names for both models: one filter compares them
        assert child.data.metrics["psnr_y_t0"] == metrics[f"{child.data.tags['model']}/psnr_y_t0"]
    children = [r for r in children if r.data.tags["cnf.mode"] == "calibrate-temperature"]
    assert sorted(float(r.data.params["temperature"]) for r in children) == [0.0, 0.5, 0.8, 1.0]
    for child in children:
        tau = child.data.params["temperature"]
        assert child.data.metrics["cnf/psnr_y"] == metrics[f"cnf/psnr_y_t{tau}"]
        assert child.data.metrics["factored/ssim_y"] == metrics[f"factored/ssim_y_t{tau}"]
