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

from monai_cnf.label import BundleUncertaintyScorer, matching_overlays, read_config_with_overlays

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
    parser = read_config_with_overlays(
        bundle / "configs" / "inference.json", [bundle / "configs" / o for o in overlays]
    )
    parser["bundle_root"] = str(bundle)
    return parser.get_parsed_content("network_def", instantiate=True)


def test_overlay_resizes_network_and_skips_training_ids(bundle):
    parser = read_config_with_overlays(bundle / "configs" / "inference.json", [bundle / "configs" / "cpu.json"])
    assert parser["hidden_channels"] == 12 and parser["num_steps"] == 2  # from the overlay
    assert "train" not in parser.config  # cpu.json's "train#..." ids have no parent in inference.json
    assert parser["preprocessing"]["_target_"] == "Compose"  # the base's own keys are kept


def test_matching_overlays_tells_the_preset(bundle):
    assert matching_overlays(bundle) is None  # no weights yet
    torch.save(_network(bundle, ["cpu.json"]).state_dict(), bundle / "models" / "model.pt")
    assert matching_overlays(bundle) == ["cpu.json"]
    torch.save({"network": _network(bundle, []).state_dict()}, bundle / "models" / "model.pt")
    assert matching_overlays(bundle) == []
    _patch(bundle / "configs" / "inference_paper.json", {"num_steps": 3, "hidden_channels": 8})
    torch.save(_network(bundle, ["inference_paper.json"]).state_dict(), bundle / "models" / "model.pt")
    assert matching_overlays(bundle) == ["inference_paper.json"]  # paper-preset weights
    _patch(bundle / "configs" / "inference.json", {"hidden_channels": 4})
    _patch(bundle / "configs" / "inference_paper.json", {"hidden_channels": 4})
    assert matching_overlays(bundle) is None  # neither preset builds these weights


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
    with pytest.raises(FileNotFoundError, match="overlay"):
        BundleUncertaintyScorer(bundle, overlays=["missing.json"])
    with pytest.raises(ValueError, match="method"):
        BundleUncertaintyScorer(bundle, method="mutual_information")
