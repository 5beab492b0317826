"""``scripts/ship_weights.py``: a run's best weights become the bundle's, with their hash and provenance."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from monai_cnf.bundle import load_bundle

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("ship_weights", ROOT / "scripts" / "ship_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bundle(tmp_path: Path) -> Path:
    """The DRIVE bundle's configs, file list and provenance, without its weights."""
    src, dst = ROOT / "bundles" / "drive_vessel", tmp_path / "drive_vessel"
    shutil.copytree(src / "configs", dst / "configs")
    shutil.copy(src / "large_files.yml", dst)
    (dst / "models").mkdir()
    shutil.copy(src / "models" / "provenance.json", dst / "models")
    return dst


def _run(tmp_path: Path, model: str) -> Path:
    run = tmp_path / f"run_{model}"
    (run / "models").mkdir(parents=True)
    (run / "provenance.json").write_text(json.dumps({"bundle": "drive_vessel", "preset": "paper", "model": model}))
    torch.save({"w": torch.arange(3.0)}, run / "models" / "model.pt")
    return run


@pytest.mark.parametrize(("model", "name"), [("cnf", "model.pt"), ("factored", "model_factored.pt")])
def test_ship_weights(tmp_path: Path, model: str, name: str) -> None:
    bundle_dir, run = _bundle(tmp_path), _run(tmp_path, model)
    shipped = _script().ship(run, bundle_dir)
    assert shipped == bundle_dir / "models" / name
    assert shipped.read_bytes() == (run / "models" / "model.pt").read_bytes()
    digest = hashlib.sha256(shipped.read_bytes()).hexdigest()
    assert f'hash_val: "{digest}"' in (bundle_dir / "large_files.yml").read_text()
    bundle = load_bundle(bundle_dir)
    assert bundle.weights_provenance(shipped) == {"preset": "paper", "model": model}
    other = "model_factored.pt" if model == "cnf" else "model.pt"  # the other entry is kept
    assert json.loads((bundle_dir / "models" / "provenance.json").read_text())[other]["preset"] == "cpu"
    entries = yaml.safe_load((bundle_dir / "large_files.yml").read_text())["large_files"]  # still valid YAML
    assert {e["path"]: e["hash_val"] for e in entries}[f"models/{name}"] == digest


def test_ship_weights_needs_a_run_with_weights(tmp_path: Path) -> None:
    bundle_dir, run = _bundle(tmp_path), _run(tmp_path, "cnf")
    (run / "models" / "model.pt").unlink()
    with pytest.raises(SystemExit, match="does not exist"):
        _script().ship(run, bundle_dir)


def test_ship_weights_records_the_network_settings_of_the_run(tmp_path: Path) -> None:
    """A run trained with `-o conditioner=unet` ships weights that the bundle then builds and loads as a U-Net."""
    from monai.bundle import ConfigParser

    from monai_cnf.bundle.loading import load_trained
    from monai_cnf.networks import UNetConditioner

    bundle_dir = _bundle(tmp_path)
    bundle = load_bundle(bundle_dir)
    parser = ConfigParser()
    parser.read_config([str(f) for f in bundle.config_files("train", "cpu", "cnf")])
    parser.update({"conditioner": "unet", "patch_size": [96, 96], "use_checkpoint": True})  # one network setting
    run = tmp_path / "run_unet"
    (run / "models").mkdir(parents=True)
    (run / "provenance.json").write_text(json.dumps({"bundle": "drive_vessel", "preset": "cpu", "model": "cnf"}))
    (run / "config.json").write_text(json.dumps(parser.get()))
    network = parser.get_parsed_content("network_def", instantiate=True)
    torch.save(network.state_dict(), run / "models" / "model.pt")

    shipped = _script().ship(run, bundle_dir)
    assert bundle.weights_provenance(shipped) == {"preset": "cpu", "model": "cnf", "overrides": {"conditioner": "unet"}}
    loaded = load_trained(bundle_dir).network  # inference.json, from models/provenance.json
    assert isinstance(loaded.conditioner, UNetConditioner)
    for name, value in network.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


def test_ship_weights_records_the_input_preprocessing_of_the_run(tmp_path: Path) -> None:
    """Weights trained on contrast-equalised images (`-o equalize_contrast=true`) are served on such images."""
    from monai.bundle import ConfigParser

    from monai_cnf.bundle.loading import load_trained
    from monai_cnf.transforms import AdaptiveHistogramEqualized

    bundle_dir = _bundle(tmp_path)
    bundle = load_bundle(bundle_dir)
    parser = ConfigParser()
    parser.read_config([str(f) for f in bundle.config_files("train", "cpu", "cnf")])
    parser.update({"equalize_contrast": True})
    run = tmp_path / "run_clahe"
    (run / "models").mkdir(parents=True)
    (run / "provenance.json").write_text(json.dumps({"bundle": "drive_vessel", "preset": "cpu", "model": "cnf"}))
    (run / "config.json").write_text(json.dumps(parser.get()))
    torch.save(parser.get_parsed_content("network_def", instantiate=True).state_dict(), run / "models" / "model.pt")

    shipped = _script().ship(run, bundle_dir)
    assert bundle.weights_provenance(shipped)["overrides"] == {"equalize_contrast": True}
    served = load_trained(bundle_dir).parser  # inference.json with the recorded settings
    names = [type(t) for t in served.get_parsed_content("preprocessing").transforms]
    assert AdaptiveHistogramEqualized in names
