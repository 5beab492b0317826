"""Invertible flow layers, Gaussian priors and the multi-scale conditional Glow.

Contract: ``forward(x, cond=None) -> (z, logdet)`` with ``logdet`` of shape ``(B,)`` and
``inverse(z, cond=None) -> x``; priors return log-probabilities separately.
"""

from __future__ import annotations

from .actnorm import ActNorm
from .base import FlowLayer, FlowSequential, check_cond, check_input, spatial_numel
from .coupling import AffineCoupling
from .glow import ConditionalGlow, FlowStep
from .invconv import InvConv, conv1x1
from .priors import GaussianPrior, SplitPrior, gaussian_log_prob
from .squeeze import Squeeze, squeeze, unsqueeze

__all__ = [
    "ActNorm",
    "AffineCoupling",
    "ConditionalGlow",
    "FlowLayer",
    "FlowSequential",
    "FlowStep",
    "GaussianPrior",
    "InvConv",
    "SplitPrior",
    "Squeeze",
    "check_cond",
    "check_input",
    "conv1x1",
    "gaussian_log_prob",
    "spatial_numel",
    "squeeze",
    "unsqueeze",
]
