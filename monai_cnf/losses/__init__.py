"""Losses for likelihood models, MONAI style (``torch.nn.modules.loss._Loss`` with ``reduction``).

- :class:`FlowNLLLoss`: negative log-likelihood of a flow in bits/dim or nats.
- :class:`WeightedBernoulliLoss`: the paper's weighted Bernoulli (Eq. 9); ``normalize=False`` is weighted CE.
- :class:`DiscretizedLogisticNLLLoss`: factored 8-bit likelihood (PixelCNN++ discretized logistic).
- :mod:`monai_cnf.losses.functional`: the elementwise log-likelihoods behind them (no MONAI import).

The classes are imported lazily so that ``monai_cnf.losses.functional`` does not pull in MONAI.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "DiscretizedLogisticNLLLoss",
    "FlowNLLLoss",
    "WeightedBernoulliLoss",
    "discretized_logistic_log_likelihood",
    "weighted_bernoulli_log_likelihood",
]

_LAZY = {
    "FlowNLLLoss": "flow_nll",
    "WeightedBernoulliLoss": "bernoulli",
    "DiscretizedLogisticNLLLoss": "logistic",
    "weighted_bernoulli_log_likelihood": "functional",
    "discretized_logistic_log_likelihood": "functional",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
