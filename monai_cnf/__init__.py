"""monai_cnf: conditional normalizing flows that learn likelihoods p(y | x), as a MONAI extension.

Submodules are imported lazily so that ``import monai_cnf`` (and ``cnf --help``) stays fast:
``monai_cnf.networks``, ``monai_cnf.losses``, ``monai_cnf.metrics``, ``monai_cnf.transforms``,
``monai_cnf.data``, ``monai_cnf.engines``, ``monai_cnf.calibration``, ``monai_cnf.tracking``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = ("networks", "losses", "metrics", "transforms", "data", "engines", "calibration", "tracking")
__all__ = ["__version__", *_SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
