"""MLflow tracking on top of MONAI's ``MLFlowHandler`` (see ``monai_cnf.tracking.handler``).

``monai_cnf.tracking.utils`` needs neither torch nor mlflow; the handler (which imports both) is loaded on first use,
so ``from monai_cnf.tracking import default_tracking_uri`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from monai_cnf.tracking.utils import (
    EVAL_RUN_ID_FILE,
    RUN_ID_FILE,
    artifact_location_for,
    default_tracking_uri,
    flatten_config,
    git_commit,
    prepare_store,
    read_run_id,
    resolve_tracking_uri,
    sqlite_path,
    write_run_id,
)

__all__ = [
    "EVAL_RUN_ID_FILE",
    "RUN_ID_FILE",
    "CNFMLFlowHandler",
    "MLflowModelHandler",
    "SamplingModel",
    "artifact_location_for",
    "default_tracking_uri",
    "flatten_config",
    "git_commit",
    "log_sampling_model",
    "make_sample_grid",
    "prepare_store",
    "read_run_id",
    "registered_model_name",
    "resolve_tracking_uri",
    "sqlite_path",
    "write_run_id",
]

_LAZY = {
    "CNFMLFlowHandler": "monai_cnf.tracking.handler",
    "make_sample_grid": "monai_cnf.tracking.handler",
    "MLflowModelHandler": "monai_cnf.tracking.models",
    "SamplingModel": "monai_cnf.tracking.models",
    "log_sampling_model": "monai_cnf.tracking.models",
    "registered_model_name": "monai_cnf.tracking.models",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
