"""Bits per dimension, the likelihood number of the paper (Tables 1-3)."""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["bits_per_dim"]


def bits_per_dim(log_prob: torch.Tensor, num_dims: int | torch.Tensor) -> torch.Tensor:
    r"""Negative log2-likelihood per dimension, :math:`\text{bpd} = -\log p(y \mid x) / (D \ln 2)`.

    ``log_prob`` is the natural-log likelihood of one label ``y`` per batch item (nats, shape ``(B,)``) as returned
    by ``model.log_prob(y, x)``; for 8-bit data it already contains the :math:`-D \log 256` dequantization term, so
    the result is in bits of the discrete 0..255 data; for binary data it is the variational lower bound of the CNF
    (so the reported bpd is an upper bound) and the exact value for a factored model.

    What is counted (:math:`D`): the number of label elements ``C·H·W[·D]`` of one ``y``. Where the model allows it,
    use the *unpadded* image: a factored model's log-likelihood is a sum over pixels, so sum only the unpadded pixels
    (and, for DRIVE, optionally only the FOV) and pass that count. A flow models the whole padded array jointly, so
    its ``log_prob`` covers the padded pixels too and ``D`` must be the padded numel (state so when reporting);
    pass ``num_dims`` per item when sizes differ.

    Args:
        log_prob: log-likelihoods in nats, shape ``(B,)``.
        num_dims: D, an int or a ``(B,)`` tensor of per-item counts.

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
    if torch.isnan(log_prob).any():
        raise ValueError("`log_prob` contains NaN; check the model.")
    if not log_prob.is_floating_point():
        log_prob = log_prob.double()
    d: Any = torch.as_tensor(num_dims, dtype=log_prob.dtype, device=log_prob.device)
    if d.ndim > 1 or (d.ndim == 1 and d.shape[0] != log_prob.shape[0]) or (d <= 0).any():
        raise ValueError(f"`num_dims` must be a positive int or a (B,) tensor matching `log_prob`, got {num_dims}.")
    return -log_prob / (d * math.log(2.0))
