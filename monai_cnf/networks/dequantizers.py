"""Dequantizers q(v | y, x): continuous representations of discrete labels for a flow, with exact log q.

For discrete ``y`` and a flow density ``p(v | x)`` the bound (Ho et al., 2019; the paper's Eq. 5)

.. math:: \\log P(y \\mid x) \\ge \\mathbb{E}_{q(v \\mid y, x)}\\left[\\log p(v \\mid x) - \\log q(v \\mid y, x)\\right]

holds whenever ``q(. | y, x)`` puts all its mass in the cell of ``y`` (the set of ``v`` that quantize to ``y``).
Each dequantizer returns ``(v, log_q)`` with ``log_q`` of shape ``(B,)`` in nats and has ``quantize(v) -> y``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from monai_cnf.networks.conditioners.subnets import get_conv_type
from monai_cnf.networks.flows.base import FlowSequential
from monai_cnf.networks.flows.glow import FlowStep
from monai_cnf.networks.flows.priors import GaussianPrior, gaussian_log_prob
from monai_cnf.networks.flows.squeeze import squeeze, unsqueeze

__all__ = ["BinaryDequantizer", "UniformDequantizer", "check_binary_labels", "check_integer_labels"]


def check_binary_labels(y: Tensor, name: str = "y") -> None:
    """Raise ``ValueError`` unless ``y`` holds only the values 0. and 1. (no NaN)."""
    if torch.isnan(y).any():
        raise ValueError(f"`{name}` contains NaN; binary labels must be exactly 0. or 1. (check the label transforms).")
    if ((y != 0) & (y != 1)).any():
        raise ValueError(
            f"`{name}` must be binary with values exactly {{0., 1.}} for binary dequantization; got other values "
            f"(min {float(y.min()):g}, max {float(y.max()):g}). Threshold the label first, e.g. "
            "`monai.transforms.AsDiscreted(keys='label', threshold=0.5)`."
        )


def check_integer_labels(y: Tensor, num_bins: int, name: str = "y") -> None:
    """Raise ``ValueError`` unless ``y`` holds integer values in ``[0, num_bins - 1]`` (no NaN)."""
    if torch.isnan(y).any():
        raise ValueError(f"`{name}` contains NaN; 8-bit targets must be integers in [0, {num_bins - 1}].")
    if (y < 0).any() or (y > num_bins - 1).any() or (y != torch.round(y)).any():
        hint = " It looks scaled to [0, 1]: multiply by 255 and round." if float(y.max()) <= 1.0 else ""
        raise ValueError(
            f"`{name}` must hold integer values in [0, {num_bins - 1}] for uniform dequantization (got min "
            f"{float(y.min()):g}, max {float(y.max()):g}).{hint}"
        )


class UniformDequantizer(nn.Module):
    """Uniform dequantization of integer data ``y in {0, ..., K-1}`` (``K = num_bins``) to ``[0, 1)``.

    .. math:: v = (y + u) / K, \\quad u \\sim U[0, 1)^D, \\qquad \\log q(v \\mid y) = D \\log K

    so ``log p(v | x) - log q`` is a lower bound of the log-probability of the *discrete* data: the flow models
    ``v`` on the unit scale, and the ``-D log K`` term converts its density into bits/dim of the 0..K-1 values.
    ``quantize(v) = clamp(floor(K v), 0, K - 1)``.

    Args:
        num_bins: number of discrete values K. Defaults to 256.

    Example:
        >>> deq = UniformDequantizer()
        >>> y = torch.tensor([[[[0.0, 255.0], [17.0, 128.0]]]])
        >>> v, log_q = deq(y)
        >>> bool((deq.quantize(v) == y).all()), round(float(log_q[0]) / math.log(256), 3)
        (True, 4.0)
    """

    def __init__(self, num_bins: int = 256) -> None:
        super().__init__()
        if int(num_bins) < 2:
            raise ValueError(f"`num_bins` must be >= 2, got {num_bins}.")
        self.num_bins = int(num_bins)

    def forward(
        self, y: Tensor, context: Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Return ``(v, log_q)``; ``context`` is ignored (the noise does not depend on ``x``)."""
        check_integer_labels(y, self.num_bins)
        u = torch.rand(y.shape, generator=generator, device=y.device, dtype=y.dtype)
        v = (y + u) / self.num_bins
        log_q = y.new_full((y.shape[0],), y[0].numel() * math.log(self.num_bins))
        return v, log_q

    def quantize(self, v: Tensor) -> Tensor:
        """``clamp(floor(num_bins * v), 0, num_bins - 1)`` (float tensor of integers)."""
        return torch.floor(v * self.num_bins).clamp_(0, self.num_bins - 1)


class BinaryDequantizer(nn.Module):
    """Variational dequantizer for binary labels with half-infinite noise (the paper's Eq. 8).

    .. math::
        \\epsilon \\sim \\mathcal{N}(\\mu(h), \\sigma(h)^2), \\quad u = f(\\epsilon; h), \\quad
        v = 0.5 + \\operatorname{sign}(y - 0.5) \\operatorname{softplus}(u)

    where ``h = g([2y - 1, context])`` are features of the label and of the image context, and ``f`` is a
    single-scale conditional flow (a squeeze, ``num_steps`` Glow :class:`FlowStep` s, unsqueeze), so the
    noise is correlated between neighbouring pixels. ``v`` lies in ``(0.5, inf)`` where ``y = 1`` and in
    ``(-inf, 0.5)`` where ``y = 0``: the cells tile the whole space, as a flow density on R^D requires. By the
    change of variables (the softplus Jacobian is ``sigmoid(u)``),

    .. math::
        \\log q(v \\mid y, x) = \\log \\mathcal{N}(\\epsilon; \\mu, \\sigma^2)
            - \\log\\left|\\det \\frac{\\partial f}{\\partial \\epsilon}\\right| - \\sum_i \\log \\sigma(u_i)

    exactly. ``quantize(v) = (v > 0.5)``. In float32, ``softplus(u) < ~3e-8`` (``u < ~-17``) rounds ``v`` to 0.5;
    the flow starts at N(0, 1), where this has probability ~1e-64 per element.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of ``y``.
        context_channels: channels of the full-resolution context (e.g. the image and upsampled conditioner
            features); 0 for none. Defaults to 0.
        num_steps: flow steps of ``f``. Defaults to 4.
        hidden_channels: width of the feature net and of the coupling subnets. Defaults to 32.
        coupling: ``"affine"`` or ``"additive"``. Defaults to ``"affine"``.

    Example:
        >>> deq = BinaryDequantizer(spatial_dims=2, in_channels=1, context_channels=3, hidden_channels=8)
        >>> y = (torch.rand(2, 1, 8, 8) > 0.5).float()
        >>> v, log_q = deq(y, torch.rand(2, 3, 8, 8))
        >>> bool((deq.quantize(v) == y).all()), tuple(log_q.shape)
        (True, (2,))
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        context_channels: int = 0,
        num_steps: int = 4,
        hidden_channels: int = 32,
        coupling: str = "affine",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"`spatial_dims` must be 2 or 3, got {spatial_dims}.")
        if in_channels < 1 or context_channels < 0 or num_steps < 0 or hidden_channels < 1:
            raise ValueError(
                "`in_channels` and `hidden_channels` must be >= 1 and `context_channels`, `num_steps` >= 0; got "
                f"{in_channels}, {hidden_channels}, {context_channels}, {num_steps}."
            )
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.context_channels = context_channels
        conv = get_conv_type(spatial_dims)
        # features of [y, context] at the squeezed resolution (the 2x2 stride-2 conv does the downsampling)
        self.features = nn.Sequential(
            conv(in_channels + context_channels, hidden_channels, 3, padding=1),
            nn.ReLU(inplace=True),
            conv(hidden_channels, hidden_channels, 2, stride=2),
            nn.ReLU(inplace=True),
            conv(hidden_channels, hidden_channels, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        channels = in_channels * 2**spatial_dims
        self.prior = GaussianPrior(spatial_dims, channels, cond_channels=hidden_channels)
        self.flow = FlowSequential(
            [FlowStep(spatial_dims, channels, hidden_channels, hidden_channels, coupling) for _ in range(num_steps)]
        )

    def _check(self, y: Tensor, context: Tensor | None) -> None:
        if y.ndim != self.spatial_dims + 2 or y.shape[1] != self.in_channels:
            raise ValueError(
                f"`y` must have shape (B, {self.in_channels}, *spatial) with {self.spatial_dims} spatial dims, "
                f"got {tuple(y.shape)}."
            )
        if any(s % 2 for s in y.shape[2:]):
            raise ValueError(f"`y`'s spatial size {tuple(y.shape[2:])} must be even (the noise flow squeezes once).")
        check_binary_labels(y)
        if self.context_channels == 0:
            if context is not None:
                raise ValueError("`context` given but the dequantizer was built with context_channels=0.")
        elif context is None or tuple(context.shape) != (y.shape[0], self.context_channels, *y.shape[2:]):
            got = None if context is None else tuple(context.shape)
            raise ValueError(
                f"`context` must have shape (B, {self.context_channels}, *y.spatial) = "
                f"{(y.shape[0], self.context_channels, *y.shape[2:])}, got {got}."
            )

    def _features(self, y: Tensor, context: Tensor | None) -> Tensor:
        inp = 2.0 * y - 1.0
        if context is not None:
            inp = torch.cat([inp, context.to(inp.dtype)], dim=1)
        return self.features(inp)

    def forward(
        self, y: Tensor, context: Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Draw ``v ~ q(v | y, x)`` (reparameterised) and return ``(v, log q(v | y, x))``.

        Args:
            y: binary labels ``(B, in_channels, *spatial)``, values exactly {0, 1}, even spatial sizes.
            context: ``(B, context_channels, *spatial)`` or None. Defaults to None.
            generator: random generator for the base noise. Defaults to None.

        Returns:
            ``v`` with the shape of ``y`` and ``log_q`` ``(B,)`` in nats.
        """
        self._check(y, context)
        h = self._features(y, context)
        mu, log_sigma = self.prior.params(h)
        noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        eps = mu + noise * log_sigma.exp()
        u_sq, logdet = self.flow(eps, h)
        u = unsqueeze(u_sq)
        sign = 2.0 * y - 1.0
        v = 0.5 + sign * F.softplus(u)
        log_q = gaussian_log_prob(noise, log_sigma) - logdet - F.logsigmoid(u).flatten(1).sum(1)
        return v, log_q

    def log_prob(self, v: Tensor, y: Tensor, context: Tensor | None = None) -> Tensor:
        """``log q(v | y, x)`` ``(B,)`` of a given ``v`` in the cell of ``y`` (inverts the noise flow).

        Raises:
            ValueError: if some ``v`` is outside the cell of ``y`` (``q = 0`` there).
        """
        self._check(y, context)
        sign = 2.0 * y - 1.0
        t = sign * (v - 0.5)
        if (t <= 0).any():
            raise ValueError("`v` has entries outside the cell of `y` (v > 0.5 iff y = 1); q(v | y) is 0 there.")
        u = t + torch.log(-torch.expm1(-t))  # softplus^{-1}(t) = log(e^t - 1), stable
        h = self._features(y, context)
        eps = self.flow.inverse(squeeze(u), h)
        _, logdet = self.flow(eps, h)
        return self.prior.log_prob(eps, h) - logdet - F.logsigmoid(u).flatten(1).sum(1)

    def quantize(self, v: Tensor) -> Tensor:
        """``(v > 0.5)`` as a float tensor of exactly 0. and 1."""
        return (v > 0.5).to(v.dtype if v.is_floating_point() else torch.float32)
