"""The bundle-side scoring helpers on a tiny copy of bundles/drive_vessel (main env, no MONAI Label)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from monai_cnf.label import BundleUncertaintyScorer, preset_configs

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "drive_vessel"
pytestmark = pytest.mark.skipif(
    not (BUNDLE / "configs" / "cpu.json").is_file(), reason="bundles/drive_vessel is not there yet"
)


def _patch(path: Path, values: dict) -> None:
    config = json.loads(path.read_text())
    config.update(values)
    path.write_text(json.dumps(config))


@pytest.fixture
def bundle(tmp_path):
    dst = tmp_path / "drive_vessel"
    shutil.copytree(BUNDLE / "configs", dst / "configs")
    (dst / "models").mkdir()
    _patch(dst / "configs" / "inference.json", {"num_steps": 2, "hidden_channels": 8, "feature_channels": [8, 8]})
    _patch(dst / "configs" / "cpu.json", {"num_steps": 2, "hidden_channels": 12, "feature_channels": [8, 8]})
    return dst


def _network(bundle: Path, overlays: list[str]) -> torch.nn.Module:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / "inference.json"), *(str(bundle / "configs" / o) for o in overlays)])
    parser["bundle_root"] = str(bundle)
    return parser.get_parsed_content("network_def", instantiate=True)


def test_preset_configs_follow_the_recorded_preset(bundle):
    from monai_cnf.bundle import load_bundle

    info = preset_configs(bundle, "cpu")  # nothing recorded: the device's preset
    assert info["preset"] == "cpu" and [p.name for p in info["inference"]] == ["inference.json"]
    assert [p.name for p in info["train"]] == ["train.json", "cpu.json"]
    assert preset_configs(bundle, "cuda")["preset"] == "paper"
    load_bundle(bundle).record_weights(bundle / "models" / "model.pt", "paper", "cnf", {"conditioner_norm": "batch"})
    info = preset_configs(bundle, "cpu")
    assert info["preset"] == "paper" and info["overrides"] == {"conditioner_norm": "batch"}
    assert [p.name for p in info["inference"]] == ["inference.json", "inference_paper.json"]
    assert [p.name for p in info["train"]] == ["train.json"]


def test_scorer_names_weights_that_do_not_fit(bundle, tmp_path):
    from monai_cnf.bundle import WeightsMismatchError

    _patch(bundle / "configs" / "inference_paper.json", {"num_steps": 3, "hidden_channels": 8})
    torch.save(_network(bundle, ["inference_paper.json"]).state_dict(), bundle / "models" / "model.pt")
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(image)
    with pytest.raises(WeightsMismatchError, match=r"does not fit the ConditionalNormalizingFlow of inference\.json"):
        BundleUncertaintyScorer(bundle, num_samples=2, fov_threshold=None)(image)
    score = BundleUncertaintyScorer(bundle, num_samples=2, fov_threshold=None, preset="paper")(image)
    assert 0.0 <= score <= math.log(2.0)  # a mean binary entropy in nats: the paper preset's weights were loaded


def test_scorer_zero_at_temperature_zero_and_deterministic(bundle, tmp_path):
    net = _network(bundle, [])
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    torch.save(net.state_dict(), bundle / "models" / "model.pt")
    rng = np.random.default_rng(0)
    image = tmp_path / "x.png"
    Image.fromarray((rng.random((18, 21, 3)) * 255).astype(np.uint8)).save(image)
    # at tau = 0 every sample is the same decode: no disagreement at all
    assert BundleUncertaintyScorer(bundle, num_samples=3, temperature=0.0, fov_threshold=None)(image) == 0.0
    scorer = BundleUncertaintyScorer(bundle, num_samples=4, temperature=1.0, fov_threshold=None)
    first = scorer(image)
    assert 0.0 < first <= math.log(2)
    assert scorer(image) == first  # seeded sampling: the same weights give the same score
    assert scorer._window["roi_size"] is None  # the bundle samples whole images
    _patch(bundle / "configs" / "inference.json", {"roi_size": [8, 8]})
    windowed = BundleUncertaintyScorer(bundle, num_samples=4, temperature=1.0, fov_threshold=None)
    score = windowed(image)
    assert windowed._window["roi_size"] == [8, 8] and 0.0 < score <= math.log(2) and score != first
    with pytest.raises(ValueError, match="method"):
        BundleUncertaintyScorer(bundle, method="mutual_information")
