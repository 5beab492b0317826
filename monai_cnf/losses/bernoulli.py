"""The paper's weighted Bernoulli loss (Eq. 9) and the weighted cross-entropy used for training."""

from __future__ import annotations

import torch
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from monai_cnf.losses._reduce import check_reduction, reduce_loss
from monai_cnf.losses.functional import weighted_bernoulli_log_likelihood

__all__ = ["WeightedBernoulliLoss"]


class WeightedBernoulliLoss(_Loss):
    r"""Negative log of the weighted Bernoulli likelihood (paper Eq. 9), per element, in nats.

    .. math::

        \ell_j = -\beta\, y_j \log p_j - (1 - \beta)(1 - y_j) \log(1 - p_j)
                 + \log\left(p_j^{\beta} + (1 - p_j)^{1 - \beta}\right), \qquad p_j = \sigma(l_j),

    computed in log space by :func:`monai_cnf.losses.functional.weighted_bernoulli_log_likelihood` (finite values
    and gradients for any finite logits). ``beta`` weights the positive (vessel) class exactly as in the paper's
    formula; to balance classes with vessel fraction ``f`` use ``beta = 1 - f`` (≈ 0.9 on DRIVE) — see the
    functional's docstring for why the paper's "β ≈ 10%" must be read that way.

    Reduction: ``"mean"`` is the mean over **all elements** (batch, channels and pixels), i.e. nats per pixel;
    ``"sum"`` the sum over all elements; ``"none"`` returns the elementwise loss with the input's shape. For the
    per-image likelihood of a factored model sum over non-batch dims of the ``"none"`` output.

    Args:
        beta: weight of the positive class in [0, 1]; ``None`` is the plain binary cross-entropy. Defaults to None.
        normalize: include the normaliser (a proper likelihood, for reporting bits/dim); ``False`` gives the
            weighted cross-entropy that is used for training. Defaults to True.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``. Defaults to ``"mean"``.

    Example:
        >>> loss = WeightedBernoulliLoss(beta=0.9, normalize=False)
        >>> logits = torch.zeros(1, 1, 2, 2); y = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
        >>> round(float(loss(logits, y)), 4)  # (0.9 + 3 * 0.1) * log 2 / 4
        0.2079
    """

    def __init__(
        self, beta: float | None = None, normalize: bool = True, reduction: LossReduction | str = LossReduction.MEAN
    ) -> None:
        super().__init__(reduction=check_reduction(reduction))
        if beta is not None and not 0.0 <= float(beta) <= 1.0:
            raise ValueError(f"`beta` must lie in [0, 1] (weight of the positive class), got {beta}.")
        self.beta = None if beta is None else float(beta)
        self.normalize = normalize

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Compute the loss.

        Args:
            logits: pre-sigmoid predictions ``(B, C, *spatial)``.
            target: binary labels {0., 1.} of the same shape.

        Returns:
            the reduced loss (see the class docstring).
        """
        if logits.shape != target.shape:
            raise ValueError(
                f"`logits` {tuple(logits.shape)} and `target` {tuple(target.shape)} must have the same shape "
                "(B, C, *spatial); check the number of output channels."
            )
        ll = weighted_bernoulli_log_likelihood(logits, target, beta=self.beta, normalize=self.normalize)
        return reduce_loss(-ll, self.reduction)
