"""Discretized logistic negative log-likelihood for 8-bit targets (the factored SR baseline)."""

from __future__ import annotations

import torch
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from monai_cnf.losses._reduce import check_reduction, reduce_loss
from monai_cnf.losses.functional import discretized_logistic_log_likelihood

__all__ = ["DiscretizedLogisticNLLLoss"]


class DiscretizedLogisticNLLLoss(_Loss):
    r"""Negative log-likelihood of integer targets under a per-element discretized logistic, in nats.

    :math:`\ell_j = -\log P(y_j \mid \mu_j, s_j)` with bins :math:`[y - 0.5, y + 0.5]`, the first bin open to
    :math:`-\infty` and the last to :math:`+\infty` (see
    :func:`monai_cnf.losses.functional.discretized_logistic_log_likelihood`), so the probabilities of the
    ``num_bins`` values sum to 1.

    Reduction: ``"mean"`` is the mean over all elements (nats per dimension; divide by ``ln 2`` for bits/dim),
    ``"sum"`` the sum, ``"none"`` the elementwise loss.

    Args:
        num_bins: number of discrete values (256 for 8-bit data). Defaults to 256.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``. Defaults to ``"mean"``.

    Example:
        >>> loss = DiscretizedLogisticNLLLoss(reduction="none")
        >>> y = torch.tensor([0.0, 255.0]); mu = torch.tensor([0.0, 255.0]); ls = torch.zeros(2)
        >>> [round(v, 4) for v in loss(mu, ls, y).tolist()]  # -log sigmoid(0.5)
        [0.4741, 0.4741]
    """

    def __init__(self, num_bins: int = 256, reduction: LossReduction | str = LossReduction.MEAN) -> None:
        super().__init__(reduction=check_reduction(reduction))
        if int(num_bins) < 2:
            raise ValueError(f"`num_bins` must be >= 2, got {num_bins}.")
        self.num_bins = int(num_bins)

    def forward(self, mean: torch.Tensor, log_scale: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Compute the loss.

        Args:
            mean: logistic location in grey levels, ``(B, C, *spatial)``.
            log_scale: natural log of the logistic scale (grey levels), same shape.
            target: integer values in ``[0, num_bins - 1]`` stored as floats, same shape.

        Returns:
            the reduced loss.
        """
        if mean.shape != target.shape or log_scale.shape != target.shape:
            raise ValueError(
                f"`mean` {tuple(mean.shape)}, `log_scale` {tuple(log_scale.shape)} and `target` "
                f"{tuple(target.shape)} must have the same shape; the head must output 2*C channels split in two."
            )
        ll = discretized_logistic_log_likelihood(target, mean, log_scale, num_bins=self.num_bins)
        return reduce_loss(-ll, self.reduction)
