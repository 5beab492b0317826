"""Helpers shared by the flow tests (exposed as fixtures: the suite runs with --import-mode=importlib)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

from monai_cnf.networks.flows import ActNorm


def perturb_(module: nn.Module, std: float = 0.2, seed: int = 1) -> nn.Module:
    """Give every parameter random non-trivial values (zero-initialised last layers included) and mark ActNorms
    initialised, so that identity-at-init cannot hide a wrong logdet or inverse.

    Matrices and kernels get noise of ``std / sqrt(fan_in)`` (so each layer's output moves by O(std) whatever its
    width, and wide 1x1 convs stay well conditioned); vectors (biases, log-scales) get ``std``.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            scale = std / math.sqrt(p[0].numel()) if p.ndim >= 2 else std
            p.add_(torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype) * scale)
        for m in module.modules():
            if isinstance(m, ActNorm):
                m.initialized.fill_(True)
    return module


@pytest.fixture
def perturb() -> Callable[..., nn.Module]:
    return perturb_
