"""The multi-GPU overlays of both bundles: what they disable on ranks > 0 is what the base configs hold there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUNDLES = [ROOT / "bundles" / "drive_vessel", ROOT / "bundles" / "super_resolution"]


def _merged(bundle: Path, *names: str):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / f"{n}.json") for n in names])
    return parser


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda b: b.name)
@pytest.mark.parametrize(
    ("overlay", "base"), [("multi_gpu_train", ("train",)), ("multi_gpu_evaluate", ("train", "evaluate"))]
)
def test_disabled_indexes_are_the_mlflow_handlers(bundle: Path, overlay: str, base: tuple[str, ...]) -> None:
    """MLflow handlers open the store when built, so ranks > 0 must not even build them (``_disabled_``)."""
    disabled = [k for k in json.loads((bundle / "configs" / f"{overlay}.json").read_text()) if k.endswith("_disabled_")]
    assert disabled
    for preset in ((), ("cpu",), ("factored",)):
        parser = _merged(bundle, *base[:1], *preset, *base[1:])
        for key in disabled:
            target = parser[key.rsplit("#", 1)[0] + "#_target_"]
            assert target == "monai_cnf.tracking.CNFMLFlowHandler", (key, preset, target)


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda b: b.name)
def test_train_overlay_wraps_the_objective_not_the_network(bundle: Path) -> None:
    parser = _merged(bundle, "train", "cpu", "multi_gpu_train")
    assert parser["network"] == "$@network_def.to(@torch_device)"  # checkpoints and validation use the plain model
    assert parser["train#objective#_target_"] == "torch.nn.parallel.DistributedDataParallel"
    assert parser["train#trainer#network"] == "@train#objective"
    assert "init_distributed" in parser["initialize"][0] and "destroy_distributed" in parser["finalize"][0]
    assert parser["train#dataloader#sampler"] == "@train#sampler"
    assert parser["validate#dataloader#sampler"] == "@validate#sampler"
