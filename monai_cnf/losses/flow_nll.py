"""Negative log-likelihood of a flow (or any likelihood model) in bits/dim or nats."""

from __future__ import annotations

import math

import torch
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from monai_cnf.losses._reduce import check_reduction, reduce_loss

__all__ = ["FlowNLLLoss"]


class FlowNLLLoss(_Loss):
    r"""Negative log-likelihood from a model's per-sample ``log_prob`` (nats).

    .. math::

        \text{bits/dim}_b = -\frac{\log p(y_b \mid x_b)}{D_b \ln 2}, \qquad \text{nats}_b = -\log p(y_b \mid x_b)

    where :math:`D_b` is the number of label elements counted for sample ``b`` (``C·H·W[·D]`` of one ``y``; see
    :func:`monai_cnf.metrics.bits_per_dim`). With ``units="nats"`` the loss is :math:`-\log p / D` (nats per
    dimension) when ``num_dims`` is given, else the total :math:`-\log p`.

    Args:
        units: ``"bits"`` (bits per dimension) or ``"nats"``. Defaults to ``"bits"``.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` over the batch. Defaults to ``"mean"``.

    Example:
        >>> loss = FlowNLLLoss()
        >>> float(loss(torch.tensor([-math.log(2.0) * 4]), 4))  # 1 bit per dim
        1.0
    """

    def __init__(self, units: str = "bits", reduction: LossReduction | str = LossReduction.MEAN) -> None:
        super().__init__(reduction=check_reduction(reduction))
        if units not in ("bits", "nats"):
            raise ValueError(f'`units` must be "bits" or "nats", got {units!r}.')
        self.units = units

    def forward(self, log_prob: torch.Tensor, num_dims: int | torch.Tensor | None = None) -> torch.Tensor:
        """Compute the loss.

        Args:
            log_prob: log-likelihood in nats per sample, shape ``(B,)``.
            num_dims: number of dimensions D, an int or a ``(B,)`` tensor (per-sample unpadded sizes). Required
                for ``units="bits"``; optional for ``"nats"`` (then the total NLL in nats). Defaults to None.

        Returns:
            scalar for ``"mean"``/``"sum"``, ``(B,)`` for ``"none"``.
        """
        if log_prob.ndim != 1:
            raise ValueError(
                f"`log_prob` must have shape (B,), got {tuple(log_prob.shape)}; sum over dimensions first."
            )
        if torch.isnan(log_prob).any():
            raise ValueError("`log_prob` contains NaN; check the model (learning rate, gradient clipping).")
        nll = -log_prob
        if num_dims is None:
            if self.units == "bits":
                raise ValueError('`num_dims` is required for units="bits" (numel of one label, e.g. C*H*W).')
        else:
            d = torch.as_tensor(num_dims, dtype=log_prob.dtype, device=log_prob.device)
            if (d <= 0).any():
                raise ValueError(f"`num_dims` must be positive, got {num_dims}.")
            if d.ndim not in (0, 1) or (d.ndim == 1 and d.shape[0] != log_prob.shape[0]):
                raise ValueError(
                    f"`num_dims` must be an int or a (B,) tensor matching `log_prob`, got shape {tuple(d.shape)}."
                )
            nll = nll / d
            if self.units == "bits":
                nll = nll / math.log(2.0)
        return reduce_loss(nll, self.reduction)
