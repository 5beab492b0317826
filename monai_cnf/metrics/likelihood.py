"""Bits per dimension, the likelihood number of the paper (Tables 1-3)."""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["bits_per_dim", "real_dims"]


def bits_per_dim(log_prob: torch.Tensor, num_dims: int | torch.Tensor, allow_nan: bool = False) -> torch.Tensor:
    r"""Negative log2-likelihood per dimension, :math:`\text{bpd} = -\log p(y \mid x) / (D \ln 2)`.

    ``log_prob`` is the natural-log likelihood of one label ``y`` per batch item (nats, shape ``(B,)``) as returned
    by ``model.log_prob(y, x)``; for 8-bit data it already contains the :math:`-D \log 256` dequantization term, so
    the result is in bits of the discrete 0..255 data; for binary data it is the variational lower bound of the CNF
    (so the reported bpd is an upper bound) and the exact value for a factored model.

    What is counted (:math:`D`) is the caller's choice and must be stated with the number. This project reports
    **bits per real label element**: unpadded and, for DRIVE, inside the field of view (:func:`real_dims` counts
    them from the mask). A factored model's log-likelihood is a sum over pixels, so summing it over those pixels
    gives their exact bits/dim. A flow models the whole (padded) array jointly; since
    :math:`p(y) \le p(y_\text{real})`, its :math:`-\log p(y) / D_\text{real}` is a conservative bound (and with
    dequantization, a bound on a bound). The paper's own protocol divides by every element of the 1024x1024 padded
    label instead (3.2x more elements than DRIVE's real pixels); report it beside, labelled. Pass ``num_dims`` per
    item when the counts differ.

    Args:
        log_prob: log-likelihoods in nats, shape ``(B,)``.
        num_dims: D, an int or a ``(B,)`` tensor of per-item counts.
        allow_nan: pass NaNs through (a training loop that reports them itself). Defaults to False.

    Returns:
        bits per dimension, shape ``(B,)``, float.

    Raises:
        ValueError: if ``log_prob`` is not 1-D, has NaNs, or ``num_dims`` is not positive / mismatched.

    Example:
        >>> bits_per_dim(torch.tensor([-8 * math.log(2.0)]), 4)
        tensor([2.])
    """
    log_prob = torch.as_tensor(log_prob)
    if log_prob.ndim != 1:
        raise ValueError(
            f"`log_prob` must have shape (B,), got {tuple(log_prob.shape)}; sum the elementwise terms per item."
        )
    if not allow_nan and torch.isnan(log_prob).any():
        raise ValueError("`log_prob` contains NaN; check the model.")
    if not log_prob.is_floating_point():
        log_prob = log_prob.double()
    d: Any = torch.as_tensor(num_dims, dtype=log_prob.dtype, device=log_prob.device)
    if d.ndim > 1 or (d.ndim == 1 and d.shape[0] != log_prob.shape[0]) or (d <= 0).any():
        raise ValueError(f"`num_dims` must be a positive int or a (B,) tensor matching `log_prob`, got {num_dims}.")
    return -log_prob / (d * math.log(2.0))


def real_dims(target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-item count of the label elements that count for bits/dim: those inside ``mask`` (all without one).

    Args:
        target: ``(B, C, *spatial)`` labels.
        mask: optional ``(B, 1 or C, *spatial)`` mask of the real elements (e.g. DRIVE's FOV, zero in the padding).

    Returns:
        ``(B,)`` float64 counts (``C * |mask|`` per item).

    Raises:
        ValueError: if the mask does not broadcast to the target or selects no element of an item.

    Example:
        >>> real_dims(torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4).tril())
        tensor([10., 10.], dtype=torch.float64)
    """
    if mask is None:
        return torch.full((target.shape[0],), float(target[0].numel()), dtype=torch.float64, device=target.device)
    mask = torch.as_tensor(mask, device=target.device)
    if mask.ndim != target.ndim or mask.shape[0] != target.shape[0] or mask.shape[2:] != target.shape[2:]:
        raise ValueError(
            f"`mask` of shape {tuple(mask.shape)} does not match the target {tuple(target.shape)}; pad/crop the mask "
            "with the label (e.g. add 'mask' to the DivisiblePadd keys)."
        )
    counts = (mask > 0.5).expand_as(target).flatten(1).sum(1).to(torch.float64)
    if (counts == 0).any():
        raise ValueError("`mask` selects no element of an item; check the FOV mask (it must be > 0.5 inside).")
    return counts
