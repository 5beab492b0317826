"""The bundle layer: one path from a bundle and a run folder to a trained model.

- :mod:`~monai_cnf.bundle.files`: a bundle's metadata, configs and presets (MONAI's own merge of a config list);
- :mod:`~monai_cnf.bundle.overrides`: ``key=value`` overrides, checked against the merged config before any work;
- :mod:`~monai_cnf.bundle.run_folder`: what ``cnf train`` writes (configs, checkpoints, ``models/``, key metric,
  MLflow ids, provenance);
- :mod:`~monai_cnf.bundle.loading`: :func:`load_trained`, the network with its weights, its parser and provenance.

Only the standard library is imported by this package's modules at import time (``cnf --help`` stays instant).
"""

from __future__ import annotations

from monai_cnf.bundle.files import (
    Bundle,
    BundleError,
    ModelKind,
    Preset,
    Split,
    Workflow,
    check_json,
    load_bundle,
    preset_value,
)
from monai_cnf.bundle.loading import (
    Provenance,
    Trained,
    WeightsMismatchError,
    load_trained,
    load_weights,
    unwrap_state_dict,
)
from monai_cnf.bundle.overrides import check_overrides, config_ids, parse_overrides
from monai_cnf.bundle.run_folder import RunFolder, default_checkpoint, latest_checkpoint

__all__ = [
    "Bundle",
    "BundleError",
    "ModelKind",
    "Preset",
    "Provenance",
    "RunFolder",
    "Split",
    "Trained",
    "WeightsMismatchError",
    "Workflow",
    "check_json",
    "check_overrides",
    "config_ids",
    "default_checkpoint",
    "latest_checkpoint",
    "load_bundle",
    "load_trained",
    "load_weights",
    "parse_overrides",
    "preset_value",
    "unwrap_state_dict",
]
