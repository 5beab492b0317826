"""Fixtures of the CLI tests: a tiny, complete bundle written into tmp_path, and a Typer test runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

METADATA = {
    "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json",
    "version": "0.1.0",
    "changelog": {"0.1.0": "tiny test bundle"},
    "monai_version": "1.6.1",
    "pytorch_version": "2.13.0",
    "numpy_version": "2.0.0",
    "required_packages_version": {"monai_cnf": "0.1.0"},
    "task": "test",
    "description": "a 1x1 conv standing in for a model",
    "authors": "tests",
    "copyright": "tests",
    "network_data_format": {
        "inputs": {
            "image": {
                "type": "image",
                "format": "RGB",
                "num_channels": 3,
                "spatial_shape": ["16*n", "16*n"],
                "dtype": "float32",
                "value_range": [0, 1],
                "is_patch_data": False,
                "channel_def": {"0": "R", "1": "G", "2": "B"},
            }
        },
        "outputs": {
            "pred": {
                "type": "image",
                "format": "segmentation",
                "num_channels": 1,
                "spatial_shape": ["16*n", "16*n"],
                "dtype": "float32",
                "value_range": [0, 1],
                "is_patch_data": False,
                "channel_def": {"0": "vessel"},
            }
        },
    },
}

NETWORK = {
    "_target_": "monai_cnf.networks.FactoredBaseline",
    "spatial_dims": 2,
    "in_channels": 3,
    "out_channels": 1,
    "num_levels": 2,
    "hidden_channels": 4,
    "conditioner_kwargs": {"feature_channels": [4, 8]},
}

TRAIN = {
    "bundle_root": ".",
    "output_dir": "$@bundle_root + '/runs'",
    "dataset_dir": None,
    "device": "cpu",
    "max_epochs": 1,
    "tracking_uri": None,
    "experiment_name": "tiny",
    "run_name": None,
    "resume": False,
    "network_def": NETWORK,
    "run": ["$print('tiny bundle: nothing to train')"],
}

INFERENCE = {
    "bundle_root": ".",
    "device": "cpu",
    "checkpoint": "$@bundle_root + '/models/model.pt'",
    "num_samples": 4,
    "temperature": 1.0,
    "network_def": NETWORK,
    "preprocessing": {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "LoadImaged", "keys": "image", "image_only": True},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": 0, "a_max": 255, "b_min": 0, "b_max": 1},
        ],
    },
    "inferer": {
        "_target_": "monai_cnf.engines.SampleInferer",
        "num_samples": "@num_samples",
        "temperature": "@temperature",
    },
}


def write_bundle(root: Path, train: dict | None = None, metadata: dict | None = None) -> Path:
    """Write the tiny bundle (metadata, train, inference, models/model.pt) into ``root``."""
    import torch

    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "configs" / "metadata.json").write_text(json.dumps(metadata or METADATA, indent=2))
    (root / "configs" / "train.json").write_text(json.dumps(train or TRAIN, indent=2))
    (root / "configs" / "inference.json").write_text(json.dumps(INFERENCE, indent=2))
    from monai.bundle import ConfigParser

    torch.manual_seed(0)
    torch.save(ConfigParser({"net": NETWORK}).get_parsed_content("net").state_dict(), root / "models" / "model.pt")
    return root


@pytest.fixture
def tiny_bundle(tmp_path: Path) -> Path:
    return write_bundle(tmp_path / "tiny_bundle")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def make_bundle():
    """``make_bundle(root, train=None, metadata=None)`` writes the tiny bundle (see ``write_bundle``)."""
    return write_bundle


@pytest.fixture
def metadata() -> dict:
    """A deep copy of the tiny bundle's metadata, to break."""
    import copy

    return copy.deepcopy(METADATA)
