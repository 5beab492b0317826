"""MONAI Label support: CNF sample-disagreement scores for active learning and the server command line.

- :func:`uncertainty_score`, :func:`sample_disagreement`, :func:`binary_entropy`, :func:`fov_mask`,
  :func:`rank_by_score`: per-image scores from N CNF samples (torch only).
- :class:`BundleUncertaintyScorer`: loads a bundle's trained network and scores image files (imports MONAI when
  used); :func:`preset_configs`: the preset recorded for ``models/model.pt`` and its config files.
- :func:`monailabel_command`, :func:`monailabel_env`, :func:`find_monailabel`: the offline
  ``monailabel start_server`` command for ``apps/monailabel_cnf``.

Nothing here imports ``monailabel``: MONAI Label runs in its own environment (``scripts/monailabel_env.sh``); the
MONAI Label classes (scoring method, strategy, app) live in ``apps/monailabel_cnf``.
"""

from __future__ import annotations

from monai_cnf.label.bundle_scorer import BundleUncertaintyScorer, preset_configs
from monai_cnf.label.scoring import (
    UNCERTAINTY_METHODS,
    binary_entropy,
    fov_mask,
    rank_by_score,
    sample_disagreement,
    uncertainty_score,
)
from monai_cnf.label.server import (
    OFFLINE_CONF,
    OFFLINE_ENV,
    default_app_dir,
    find_monailabel,
    monailabel_command,
    monailabel_env,
)

__all__ = [
    "OFFLINE_CONF",
    "OFFLINE_ENV",
    "UNCERTAINTY_METHODS",
    "BundleUncertaintyScorer",
    "binary_entropy",
    "default_app_dir",
    "find_monailabel",
    "fov_mask",
    "monailabel_command",
    "monailabel_env",
    "preset_configs",
    "rank_by_score",
    "sample_disagreement",
    "uncertainty_score",
]
