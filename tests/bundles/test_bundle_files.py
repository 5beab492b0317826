"""What a model-zoo user checks of a bundle's files: hashes of the shipped weights, real package versions, licences."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import yaml

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
NAMES = ["drive_vessel", "super_resolution"]


@pytest.mark.parametrize("name", NAMES)
def test_large_files_hash_the_shipped_weights(name: str) -> None:
    bundle = BUNDLES / name
    entries = yaml.safe_load((bundle / "large_files.yml").read_text())["large_files"]
    assert {e["path"] for e in entries} == {"models/model.pt", "models/model_factored.pt"}
    for entry in entries:
        assert entry["hash_type"] == "sha256"
        assert hashlib.sha256((bundle / entry["path"]).read_bytes()).hexdigest() == entry["hash_val"], entry["path"]


@pytest.mark.parametrize("name", NAMES)
def test_metadata_holds_versions_results_and_a_data_licence(name: str) -> None:
    bundle = BUNDLES / name
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    version = re.compile(r"^\d+\.\d+\.\d+$")
    for package, v in meta["required_packages_version"].items():
        assert version.match(v), f"{package}: {v!r} is not a version"
    assert version.match(meta["version"]) and meta["version"] in meta["changelog"]
    assert (bundle / "docs" / "data_license.txt").is_file()


@pytest.mark.parametrize("name", NAMES)
def test_recorded_results_belong_to_the_shipped_weights(name: str) -> None:
    """``eval_metrics_weights`` is the digest of the shipped ``models/model.pt``: ``cnf bundle verify`` finds the
    results current (a recorded value in another format read as stale)."""
    from monai_cnf.bundle import load_bundle
    from monai_cnf.bundle.verify import check_results

    check = check_results(load_bundle(BUNDLES / name))
    assert check.ok, check.detail
