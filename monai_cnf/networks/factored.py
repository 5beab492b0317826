"""Factored (per-pixel independent) baselines p(y | x) = prod_d p(y_d | x) with the CNF's conditioners."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from monai_cnf.losses.functional import discretized_logistic_log_likelihood, weighted_bernoulli_log_likelihood
from monai_cnf.metrics.likelihood import bits_per_dim, real_dims
from monai_cnf.networks.base import ConditionalLikelihoodModel, Task
from monai_cnf.networks.checkpointing import checkpointed
from monai_cnf.networks.cnf import ShiftHead, build_conditioner, check_condition_image, check_target

__all__ = ["FactoredBaseline"]

LIKELIHOODS = ("bernoulli", "logistic")
# Initial logistic scale (grey levels) added to the head's log-scale: an initialisation choice, so that the
# untrained model is broad rather than sure to 1 grey level; the head learns the actual scale.
_INIT_LOG_SCALE = math.log(8.0)


class FactoredBaseline(ConditionalLikelihoodModel):
    r"""Factored likelihood baseline: the CNF's conditioner and a per-pixel head (the paper's "factored baseline").

    Head: every level's features ``conds[l]`` are projected by a 1x1 conv to ``hidden_channels`` and summed
    top-down with nearest 2x upsampling (equal to summing all levels nearest-upsampled to full resolution, at a
    fraction of the cost), upsampled once more to the target's resolution, then ``ReLU -> conv 3x3 -> ReLU ->
    conv 1x1``. So the baseline sees the same features as the flow (deeper levels included).

    Likelihoods (per pixel, summed over all ``D`` elements):

    * ``"bernoulli"`` (binary ``y``): the soft image :math:`p = \sigma(l)`. Samples are independent Bernoullis of
      ``p``, as the paper samples its factored baseline (:meth:`probabilities` returns ``p``). The likelihood
      (:meth:`log_prob`, bits/dim) is, with ``beta``, the normalised weighted Bernoulli of the paper's Eq. 9,
      :math:`P(y) = p^{\beta y}(1-p)^{(1-\beta)(1-y)} / (p^\beta + (1-p)^{1-\beta})`, the distribution the
      network was trained to fit; without ``beta`` the plain Bernoulli (then both choices agree).
      :meth:`head` returns the logits ``l`` (train with ``WeightedBernoulliLoss(beta, normalize=False)``).
    * ``"logistic"`` (8-bit ``y``): discretized logistic with 256 bins (edge bins absorb the tails);
      :meth:`head` returns ``(mean, log_scale)`` in grey levels (``log_scale`` starts at ``log 8``). With
      ``residual`` (and ``in_channels == out_channels``) the mean is ``255 * upsample(x) + 127.5 * r`` (the head
      learns a correction of the interpolated image), else ``127.5 + 127.5 * r``.

    :meth:`sample` draws independent pixels; :meth:`forward` returns the per-pixel mode of those samples (Bernoulli:
    the soft image thresholded at 0.5; logistic: the most probable grey level, exactly, edge bins included).

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of ``x``.
        out_channels: channels of ``y``.
        num_levels: levels of the conditioner (as in the CNF it is compared with). Defaults to 2.
        conditioner: ``"vgg"``, ``"unet"``, ``"rrdb"`` or an ``nn.Module`` (see
            :class:`~monai_cnf.networks.ConditionalNormalizingFlow`). Defaults to ``"vgg"``.
        likelihood: ``"bernoulli"`` or ``"logistic"``. Defaults to ``"bernoulli"``.
        beta: Eq. 9 weight of the positive class (Bernoulli only); None for the plain Bernoulli. Defaults to None.
        hidden_channels: width of the head. Defaults to 64.
        scale: target size / ``x`` size. Defaults to 1.
        conditioner_kwargs: arguments of the named conditioner. Defaults to None.
        cond_channels: channels per level of a custom conditioner without ``out_channels``. Defaults to None.
        residual: logistic only: predict a correction of the upsampled ``x``. Defaults to True.
        use_checkpoint: recompute the conditioner's activations in backward (as the CNF's option). Defaults to False.

    Example:
        >>> model = FactoredBaseline(spatial_dims=2, in_channels=3, out_channels=1, num_levels=2,
        ...                          hidden_channels=8, conditioner_kwargs={"feature_channels": (8, 16)})
        >>> x, y = torch.rand(2, 3, 16, 16), (torch.rand(2, 1, 16, 16) > 0.5).float()
        >>> model.log_prob(y, x).shape, model.sample(x, num_samples=3).shape, model(x).shape
        (torch.Size([2]), torch.Size([3, 2, 1, 16, 16]), torch.Size([2, 1, 16, 16]))
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        num_levels: int = 2,
        conditioner: str | nn.Module = "vgg",
        likelihood: str = "bernoulli",
        beta: float | None = None,
        hidden_channels: int = 64,
        scale: int = 1,
        conditioner_kwargs: dict[str, Any] | None = None,
        cond_channels: Sequence[int] | None = None,
        residual: bool = True,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"`spatial_dims` must be 2 or 3, got {spatial_dims}.")
        if in_channels < 1 or out_channels < 1 or hidden_channels < 1:
            raise ValueError(
                "`in_channels`, `out_channels` and `hidden_channels` must be >= 1, got "
                f"{in_channels}, {out_channels}, {hidden_channels}."
            )
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"`likelihood` must be one of {LIKELIHOODS}, got {likelihood!r}.")
        if beta is not None and (likelihood != "bernoulli" or not 0.0 <= float(beta) <= 1.0):
            raise ValueError(f"`beta` must be in [0, 1] and needs likelihood='bernoulli'; got {beta} ({likelihood}).")
        if int(scale) != scale or scale < 1:
            raise ValueError(f"`scale` must be a positive integer (target size / x size), got {scale}.")
        if int(num_levels) < 1:
            raise ValueError(f"`num_levels` must be >= 1, got {num_levels}.")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_levels = int(num_levels)
        self.likelihood = likelihood
        self.beta = None if beta is None else float(beta)
        self.scale = int(scale)
        self.num_bins = 256
        self.use_checkpoint = bool(use_checkpoint)
        self.residual = bool(residual) and likelihood == "logistic" and in_channels == out_channels
        self.conditioner, self.cond_channels = build_conditioner(
            conditioner, spatial_dims, in_channels, self.num_levels, self.scale, conditioner_kwargs, cond_channels
        )
        per_pixel = 1 if likelihood == "bernoulli" else 2
        # the last conv is zero-initialised: the model starts at p = 0.5 (Bernoulli) or at the interpolated image
        # with scale e^_INIT_LOG_SCALE grey levels (logistic)
        channels = out_channels * per_pixel
        self.project, self.out = ShiftHead.layers(spatial_dims, self.cond_channels, channels, hidden_channels)

    @property
    def divisor(self) -> int:
        """Target spatial sizes must be divisible by this (``2**num_levels``)."""
        return 2**self.num_levels

    @property
    def task(self) -> Task:
        """Bernoulli: segmentation; discretized logistic: super-resolution (8-bit targets)."""
        return Task.segmentation if self.likelihood == "bernoulli" else Task.super_resolution

    def has_exact_moments(self, temperature: float = 1.0) -> bool:
        """Bernoulli at temperature 1: the samples' moments are :meth:`probabilities`."""
        return self.likelihood == "bernoulli" and float(temperature) == 1.0

    def exact_moments(self, x: Tensor, temperature: float = 1.0) -> tuple[Tensor, Tensor]:
        """Bernoulli at temperature 1: ``E[y] = E[y^2] = P(y = 1 | x)`` (:meth:`probabilities`)."""
        if not self.has_exact_moments(temperature):
            return super().exact_moments(x, temperature)
        p = self.probabilities(x)
        return p, p

    def _conds(self, x: Tensor) -> list[Tensor]:
        check_condition_image(x, self.spatial_dims, self.in_channels, self.divisor, self.scale)
        conds = checkpointed(self.conditioner, x) if self.use_checkpoint else self.conditioner(x)
        if isinstance(conds, Tensor) or len(conds) != self.num_levels:
            raise ValueError(f"the conditioner must return a list of num_levels={self.num_levels} feature maps.")
        for level, (h, c) in enumerate(zip(conds, self.cond_channels, strict=True)):
            expected = (x.shape[0], c, *(s * self.scale // 2 ** (level + 1) for s in x.shape[2:]))
            if tuple(h.shape) != expected:
                raise ValueError(
                    f"the conditioner returned conds[{level}] of shape {tuple(h.shape)}; expected {expected} "
                    f"(the target's size / 2**{level + 1} with {c} channels)."
                )
        return list(conds)

    def head(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        """Per-pixel parameters: logits ``(B, out_channels, *target_spatial)`` (Bernoulli) or ``(mean, log_scale)``
        in grey levels (logistic)."""
        conds = self._conds(x)
        out = ShiftHead.combine(self.project, self.out, conds)
        if self.likelihood == "bernoulli":
            return out
        raw_mean, log_scale = out[:, : self.out_channels], out[:, self.out_channels :] + _INIT_LOG_SCALE
        if self.residual:
            base = (
                x
                if self.scale == 1
                else F.interpolate(
                    x, scale_factor=self.scale, mode="bilinear" if self.spatial_dims == 2 else "trilinear"
                )
            )
            return 255.0 * base + 127.5 * raw_mean, log_scale
        return 127.5 + 127.5 * raw_mean, log_scale

    def probabilities(self, x: Tensor) -> Tensor:
        """Bernoulli only: the soft image ``sigmoid(head(x))`` ``(B, out_channels, *spatial)``, whose independent
        Bernoullis are the model's samples at temperature 1 (so it is their exact mean)."""
        if self.likelihood != "bernoulli":
            raise ValueError("`probabilities` is defined for likelihood='bernoulli' only; use `head` for logistic.")
        return torch.sigmoid(self.head(x))  # type: ignore[arg-type]

    def log_prob(self, y: Tensor, x: Tensor, num_samples: int = 1, mask: Tensor | None = None) -> Tensor:
        """Exact ``log p(y | x)`` in nats, shape ``(B,)``: the sum over pixels (inside ``mask`` when given).

        Bernoulli with ``beta``: Eq. 9 with its normaliser. ``num_samples`` is accepted for API parity, unused.
        """
        kind = "binary" if self.likelihood == "bernoulli" else "uniform"
        check_target(y, x, self.out_channels, self.divisor, self.scale, kind, self.num_bins)
        params = self.head(x)
        if self.likelihood == "bernoulli":
            ll = weighted_bernoulli_log_likelihood(params, y, beta=self.beta, normalize=True)  # type: ignore[arg-type]
        else:
            mean, log_scale = params  # type: ignore[misc]
            ll = discretized_logistic_log_likelihood(y, mean, log_scale, num_bins=self.num_bins)
        if mask is not None:
            real_dims(y, mask)  # checks the mask's shape
            ll = ll * (mask > 0.5).expand_as(ll).to(ll.dtype)
        return ll.flatten(1).sum(1)

    def bits_per_dim(self, y: Tensor, x: Tensor, num_samples: int = 1, mask: Tensor | None = None) -> Tensor:
        """Bits per real label element, ``-log p(y[mask] | x) / (D ln 2)``, exact; shape ``(B,)``.

        ``D`` counts the elements inside ``mask`` (all without one; :func:`monai_cnf.metrics.real_dims`).
        """
        return bits_per_dim(self.log_prob(y, x, mask=mask), real_dims(y, mask))

    @torch.no_grad()
    def sample(
        self,
        x: Tensor,
        num_samples: int = 4,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        chunk_size: int | None = None,
    ) -> Tensor:
        """Independent per-pixel samples ``(S, B, out_channels, *target_spatial)``.

        Temperature ``tau`` divides the Bernoulli logit (``P(y=1) = sigmoid(l / tau)``, the soft image at ``tau = 1``,
        not the Eq. 9 probability of :meth:`log_prob`) and multiplies the
        logistic scale; ``tau = 1`` samples the model itself and ``tau = 0`` returns the mode (:meth:`forward`).
        Bernoulli samples are exactly {0, 1}; logistic samples are the continuous logistic rounded to the nearest
        integer and clamped to [0, 255], which is exactly the discretized logistic. The head runs once, so every
        ``chunk_size`` gives one pass (accepted for the protocol).
        """
        self.check_sampling(num_samples, temperature, chunk_size)
        return torch.cat(list(self.sample_chunks(x, num_samples, temperature, generator)), dim=0)  # one pass

    @torch.no_grad()
    def sample_chunks(
        self,
        x: Tensor,
        num_samples: int = 4,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        chunk_size: int | None = None,
    ) -> Iterator[Tensor]:
        """:meth:`sample`'s samples ``chunk_size`` at a time (default: all in one); the head runs once."""
        self.check_sampling(num_samples, temperature, chunk_size)
        chunk = int(chunk_size or num_samples)
        if temperature == 0:
            mode = self.forward(x)
        else:
            params = self.head(x)
        done = 0
        while done < int(num_samples):
            k = min(chunk, int(num_samples) - done)
            if temperature == 0:
                yield mode.unsqueeze(0).expand(k, *mode.shape).clone()
            else:
                yield self._draw(params, k, temperature, generator)
            done += k

    def _draw(self, params: Any, num_samples: int, temperature: float, generator: torch.Generator | None) -> Tensor:
        """``num_samples`` samples of the per-pixel distribution the head's ``params`` define, at ``temperature``."""
        if self.likelihood == "bernoulli":
            p = torch.sigmoid(params / temperature)
            p = p.unsqueeze(0).expand(num_samples, *p.shape)
            return torch.bernoulli(p, generator=generator)
        mean, log_scale = params
        shape = (num_samples, *mean.shape)
        u = torch.rand(shape, generator=generator, device=mean.device, dtype=mean.dtype).clamp_(1e-7, 1 - 1e-7)
        z = mean + temperature * log_scale.exp() * (torch.log(u) - torch.log1p(-u))
        return torch.round(z).clamp_(0, self.num_bins - 1)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        """Per-pixel mode ``(B, out_channels, *target_spatial)`` (deterministic; for MONAI inferers).

        Bernoulli: ``sigmoid(l) > 0.5``, the mode of :meth:`sample`. Logistic: the most probable of the bins 0, 255
        and the one nearest the mean (a symmetric unimodal density gives the interior bin nearest its centre the
        most mass), exactly.
        """
        params = self.head(x)
        if self.likelihood == "bernoulli":
            return (params > 0).to(params.dtype)  # type: ignore[operator, union-attr]
        mean, log_scale = params  # type: ignore[misc]
        candidates = torch.stack(
            [torch.round(mean).clamp(0, self.num_bins - 1), torch.zeros_like(mean), torch.full_like(mean, 255.0)]
        )
        log_p = discretized_logistic_log_likelihood(candidates, mean.unsqueeze(0), log_scale.unsqueeze(0))
        return torch.gather(candidates, 0, log_p.argmax(0, keepdim=True))[0]
