"""Conditional Gaussian base distributions: the top prior and the split (factor-out) prior.

Priors are not flow layers: they return log-probabilities (nats, shape ``(B,)``) separately. Both use
*standardised* latents ``eps = (z - mu) / sigma``: ``sample(eps=...)`` maps a given standardised latent back
(``z = mu + temperature * sigma * eps``), so encoding and decoding are exact inverses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..conditioners.subnets import get_conv_type, zero_init_
from .base import check_cond, check_input

__all__ = ["GaussianPrior", "SplitPrior", "gaussian_log_prob"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


#: bound of the priors' log-scales. Far outside the range a trained flow meets (sigma from 3e-7 to 3e6), so the
#: density there is unchanged; it keeps sigma finite in float32 when sampling feeds a split prior latents far outside
#: the training range (at high temperature an untrained or CPU-sized flow can grow them to ~1e4, and exp(log_sigma)
#: then overflowed to inf and the sample to NaN).
LOG_SIGMA_BOUND = 15.0


def gaussian_log_prob(eps: Tensor, log_sigma: Tensor) -> Tensor:
    """``sum log N(z; mu, sigma^2)`` over all but the batch axis, given ``eps = (z - mu) / sigma`` and ``log sigma``.

    .. math:: \\log p = \\sum_i -\\tfrac12 \\epsilon_i^2 - \\log\\sigma_i - \\tfrac12\\log 2\\pi

    Args:
        eps: standardised values ``(B, ...)``.
        log_sigma: log standard deviations, broadcastable to ``eps``.

    Returns:
        ``(B,)`` log-probabilities in nats.
    """
    quad = eps.square().flatten(1).sum(1).mul(-0.5)
    return quad - log_sigma.expand_as(eps).flatten(1).sum(1) - _HALF_LOG_2PI * eps[0].numel()


def _sample_eps(
    shape: Sequence[int], temperature: float, like: Tensor, eps: Tensor | None, generator: torch.Generator | None
) -> Tensor:
    if eps is not None:
        if tuple(eps.shape) != tuple(shape):
            raise ValueError(f"the given latent eps must have shape {tuple(shape)}, got {tuple(eps.shape)}.")
        return eps if temperature == 1.0 else eps * temperature
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}.")
    if temperature == 0:
        return like.new_zeros(shape)
    noise = torch.randn(tuple(shape), generator=generator, device=like.device, dtype=like.dtype)
    return noise if temperature == 1.0 else noise * temperature


class GaussianPrior(nn.Module):
    """Diagonal Gaussian base distribution whose mean and scale come from the conditioning features.

    .. math:: p(z \\mid h) = \\mathcal{N}(z; \\mu(h), \\sigma(h)^2), \\qquad [\\mu, \\log\\sigma] = \\mathrm{conv}(h)

    The conv is zero-initialised, so the prior starts as N(0, 1). Unconditional (``cond_channels=0``): per-channel
    learned ``mu`` and ``log sigma`` (zero-initialised) or, with ``learnable=False``, the standard normal.
    Sampling at temperature ``tau`` draws :math:`z = \\mu + \\tau \\sigma \\epsilon`, :math:`\\epsilon \\sim N(0, I)`
    (``tau = 0`` gives the mean).

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        in_channels: channels of ``z``.
        cond_channels: channels of ``cond`` (same spatial size as ``z``); 0 for unconditional. Defaults to 0.
        kernel_size: kernel of the conv on ``cond``. Defaults to 3.
        learnable: unconditional only: learn per-channel mean and scale. Defaults to True.

    >>> import torch
    >>> prior = GaussianPrior(spatial_dims=2, in_channels=4, cond_channels=8)
    >>> h = torch.randn(2, 8, 4, 4)
    >>> z = prior.sample(h, temperature=0.8)
    >>> z.shape, prior.log_prob(z, h).shape
    (torch.Size([2, 4, 4, 4]), torch.Size([2]))
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        cond_channels: int = 0,
        kernel_size: int = 3,
        learnable: bool = True,
    ) -> None:
        super().__init__()
        if in_channels < 1 or cond_channels < 0:
            raise ValueError(f"in_channels must be >= 1 and cond_channels >= 0, got {in_channels}, {cond_channels}.")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.cond_channels = cond_channels
        if cond_channels > 0:
            conv = get_conv_type(spatial_dims)
            self.net = zero_init_(conv(cond_channels, 2 * in_channels, kernel_size, padding=kernel_size // 2))
        else:
            shape = (1, in_channels) + (1,) * spatial_dims
            if learnable:
                self.loc = nn.Parameter(torch.zeros(shape))
                self.log_scale = nn.Parameter(torch.zeros(shape))
            else:
                self.register_buffer("loc", torch.zeros(shape))
                self.register_buffer("log_scale", torch.zeros(shape))

    @property
    def conditional(self) -> bool:
        """Whether the prior needs a conditioning tensor."""
        return self.cond_channels > 0

    def _check(self, z: Tensor, cond: Tensor | None) -> None:
        check_input("GaussianPrior input", z, self.spatial_dims, self.in_channels)
        check_cond("GaussianPrior", z, cond, self.cond_channels)

    def params(self, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Return ``(mu, log_sigma)``: ``(B, C, *spatial)`` from ``cond``, or ``(1, C, 1, ...)`` unconditionally."""
        if self.cond_channels == 0:
            return self.loc, self.log_scale
        if cond is None:
            raise ValueError(
                f"GaussianPrior is conditional (cond_channels={self.cond_channels}) but got cond=None; pass the "
                "conditioning features (B, cond_channels, *spatial)."
            )
        h = self.net(cond)
        return h[:, : self.in_channels], h[:, self.in_channels :].clamp(-LOG_SIGMA_BOUND, LOG_SIGMA_BOUND)

    def encode(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Return the standardised latent ``eps = (z - mu) / sigma`` and ``log p(z | cond)`` ``(B,)``."""
        self._check(z, cond)
        mu, log_sigma = self.params(cond)
        eps = (z - mu) * torch.exp(-log_sigma)
        return eps, gaussian_log_prob(eps, log_sigma)

    def log_prob(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        """``log p(z | cond)`` in nats, shape ``(B,)``."""
        return self.encode(z, cond)[1]

    def forward(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        """Same as :meth:`log_prob`."""
        return self.log_prob(z, cond)

    def sample(
        self,
        cond: Tensor | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        eps: Tensor | None = None,
        shape: Sequence[int] | None = None,
    ) -> Tensor:
        """Draw ``z = mu + temperature * sigma * eps``.

        Args:
            cond: conditioning features ``(B, cond_channels, *spatial)`` (conditional prior). Defaults to None.
            temperature: scale of the noise; 0 returns the mean. Defaults to 1.0.
            generator: random generator for the noise. Defaults to None.
            eps: a given standardised latent (decoding); drawn from N(0, I) when None. Defaults to None.
            shape: ``(B, C, *spatial)`` of ``z``, needed by an unconditional prior when ``eps`` is None.
                Defaults to None.
        """
        if self.cond_channels > 0:
            if cond is None:
                raise ValueError("GaussianPrior.sample needs cond (B, cond_channels, *spatial); got None.")
            check_input("GaussianPrior cond", cond, self.spatial_dims, self.cond_channels)
            full = (cond.shape[0], self.in_channels, *cond.shape[2:])
        elif eps is not None:
            full = tuple(eps.shape)
        elif shape is not None:
            full = tuple(shape)
        else:
            raise ValueError("an unconditional GaussianPrior.sample needs shape=(B, C, *spatial) or eps.")
        if len(full) != self.spatial_dims + 2 or full[1] != self.in_channels:
            raise ValueError(f"shape must be (B, {self.in_channels}, *spatial), got {full}.")
        mu, log_sigma = self.params(cond)
        noise = _sample_eps(full, temperature, mu, eps, generator)
        return torch.addcmul(mu, noise, log_sigma.exp())  # broadcasts the unconditional (1, C, 1, ...) parameters


class SplitPrior(nn.Module):
    """Factor out half of the channels and model them given the kept half and the conditioning features.

    .. math::
        z = [z_k, z_d], \\quad p(z_d \\mid z_k, h) = \\mathcal{N}(z_d; \\mu, \\sigma^2), \\quad
        [\\mu, \\log\\sigma] = \\mathrm{conv}([z_k, h])

    ``z_k`` is the first ``C - C // 2`` channels, ``z_d`` the last ``C // 2``. The conv is zero-initialised
    (N(0, 1) at the start).

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        in_channels: channels of ``z`` (at least 2).
        cond_channels: channels of ``cond``; 0 for unconditional. Defaults to 0.
        kernel_size: kernel of the conv. Defaults to 3.

    >>> import torch
    >>> split = SplitPrior(spatial_dims=2, in_channels=8, cond_channels=4)
    >>> z, h = torch.randn(2, 8, 4, 4), torch.randn(2, 4, 4, 4)
    >>> kept, eps, log_p = split.encode(z, h)
    >>> kept.shape, torch.allclose(split.inverse(kept, h, eps=eps), z)
    (torch.Size([2, 4, 4, 4]), True)
    """

    def __init__(self, spatial_dims: int, in_channels: int, cond_channels: int = 0, kernel_size: int = 3) -> None:
        super().__init__()
        if in_channels < 2 or cond_channels < 0:
            raise ValueError(
                f"SplitPrior needs in_channels >= 2 and cond_channels >= 0, got {in_channels}, {cond_channels}."
            )
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.cond_channels = cond_channels
        self.kept_channels = in_channels - in_channels // 2
        self.dropped_channels = in_channels // 2
        conv = get_conv_type(spatial_dims)
        self.net = zero_init_(
            conv(self.kept_channels + cond_channels, 2 * self.dropped_channels, kernel_size, padding=kernel_size // 2)
        )

    @property
    def conditional(self) -> bool:
        """Whether the prior needs a conditioning tensor."""
        return self.cond_channels > 0

    def params(self, z_kept: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(mu, log_sigma)`` of the dropped half, each ``(B, C // 2, *spatial)``."""
        h = self.net(z_kept if cond is None else torch.cat([z_kept, cond], dim=1))
        return h[:, : self.dropped_channels], h[:, self.dropped_channels :].clamp(-LOG_SIGMA_BOUND, LOG_SIGMA_BOUND)

    def encode(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Return the kept half, the dropped half's standardised latent and its log-probability ``(B,)``."""
        check_input("SplitPrior input", z, self.spatial_dims, self.in_channels)
        check_cond("SplitPrior", z, cond, self.cond_channels)
        z_kept, z_drop = z[:, : self.kept_channels], z[:, self.kept_channels :]
        mu, log_sigma = self.params(z_kept, cond)
        eps = (z_drop - mu) * torch.exp(-log_sigma)
        return z_kept, eps, gaussian_log_prob(eps, log_sigma)

    def forward(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Return ``(z_kept, log p(z_dropped | z_kept, cond))``; the log-probability has shape ``(B,)``."""
        z_kept, _, log_p = self.encode(z, cond)
        return z_kept, log_p

    def inverse(
        self,
        z_kept: Tensor,
        cond: Tensor | None = None,
        temperature: float = 1.0,
        eps: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Re-attach the dropped half: ``z_d = mu + temperature * sigma * eps`` (``eps`` drawn when None).

        Args:
            z_kept: the kept half ``(B, C - C // 2, *spatial)``.
            cond: conditioning features ``(B, cond_channels, *spatial)``. Defaults to None.
            temperature: scale of the noise; 0 uses the mean. Defaults to 1.0.
            eps: a given standardised latent ``(B, C // 2, *spatial)`` (decoding). Defaults to None.
            generator: random generator for the noise. Defaults to None.
        """
        check_input("SplitPrior kept half", z_kept, self.spatial_dims, self.kept_channels)
        check_cond("SplitPrior", z_kept, cond, self.cond_channels)
        mu, log_sigma = self.params(z_kept, cond)
        noise = _sample_eps(mu.shape, temperature, mu, eps, generator)
        return torch.cat([z_kept, torch.addcmul(mu, noise, log_sigma.exp())], dim=1)
