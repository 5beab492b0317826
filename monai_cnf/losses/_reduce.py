"""Reduction helper shared by the losses (MONAI ``LossReduction`` semantics)."""

from __future__ import annotations

import torch
from monai.utils import LossReduction

__all__ = ["check_reduction", "reduce_loss"]


def reduce_loss(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    """Apply ``reduction`` ('none' | 'mean' | 'sum') to an elementwise / per-sample loss tensor."""
    if reduction == LossReduction.MEAN.value:
        return loss.mean()
    if reduction == LossReduction.SUM.value:
        return loss.sum()
    if reduction == LossReduction.NONE.value:
        return loss
    raise ValueError(f'`reduction` must be one of "none", "mean", "sum"; got {reduction!r}.')


def check_reduction(reduction: LossReduction | str) -> str:
    """Return the reduction's string value, or raise a ValueError that names the argument."""
    try:
        return LossReduction(reduction).value
    except ValueError as e:
        raise ValueError(f'`reduction` must be one of "none", "mean", "sum"; got {reduction!r}.') from e
