"""The conditional normalizing flow model p(y | x): conditioner + dequantizer + multi-scale conditional Glow."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from monai_cnf.networks.base import ConditionalLikelihoodModel, Task
from monai_cnf.networks.checkpointing import checkpointed
from monai_cnf.networks.conditioners.rrdb import RRDBConditioner
from monai_cnf.networks.conditioners.subnets import get_conv_type, zero_init_
from monai_cnf.networks.conditioners.unet import UNetConditioner
from monai_cnf.networks.conditioners.vgg import VGGConditioner
from monai_cnf.networks.dequantizers import (
    BinaryDequantizer,
    UniformDequantizer,
    check_binary_labels,
    check_integer_labels,
)
from monai_cnf.networks.flows.glow import ConditionalGlow

__all__ = ["ConditionalNormalizingFlow", "ShiftHead", "build_conditioner", "check_condition_image", "check_target"]

DEQUANTIZATIONS = ("binary", "uniform", "none")


def build_conditioner(
    conditioner: str | nn.Module,
    spatial_dims: int,
    in_channels: int,
    num_levels: int,
    scale: int = 1,
    conditioner_kwargs: dict[str, Any] | None = None,
    cond_channels: Sequence[int] | None = None,
) -> tuple[nn.Module, list[int]]:
    """Build (or adopt) a conditioner and return it with its per-level output channels.

    Args:
        conditioner: ``"vgg"`` (:class:`VGGConditioner`), ``"unet"`` (:class:`UNetConditioner`, wider context),
            ``"rrdb"`` (:class:`RRDBConditioner`) or any
            ``nn.Module`` mapping ``x`` to a list of ``num_levels`` feature maps, ``conds[l]`` at the target's
            size / ``2**(l + 1)``.
        spatial_dims: 2 or 3.
        in_channels: channels of ``x``.
        num_levels: number of flow levels.
        scale: target size / ``x`` size. Defaults to 1.
        conditioner_kwargs: extra keyword arguments of the named conditioner. Defaults to None.
        cond_channels: channels per level of a custom module that has no ``out_channels`` attribute.
            Defaults to None.

    Example:
        >>> net, channels = build_conditioner("vgg", 2, 3, num_levels=2)
        >>> channels
        [32, 64]
    """
    kwargs = dict(conditioner_kwargs or {})
    if isinstance(conditioner, str):
        if conditioner_kwargs is not None and "scale" in kwargs and int(kwargs["scale"]) != scale:
            raise ValueError(
                f"`conditioner_kwargs['scale']`={kwargs['scale']} disagrees with the model's `scale`={scale}; "
                "set `scale` on the model only."
            )
        kwargs.pop("scale", None)
        if conditioner == "vgg":
            if scale != 1:
                raise ValueError(
                    f"conditioner='vgg' works at the target's resolution (scale=1), got scale={scale}; use "
                    "conditioner='rrdb' for super-resolution or pass your own nn.Module."
                )
            net: nn.Module = VGGConditioner(spatial_dims, in_channels, num_levels, **kwargs)
        elif conditioner == "unet":
            if scale != 1:
                raise ValueError(f"conditioner='unet' works at the target's resolution (scale=1), got scale={scale}.")
            net = UNetConditioner(spatial_dims, in_channels, num_levels, **kwargs)
        elif conditioner == "rrdb":
            net = RRDBConditioner(spatial_dims, in_channels, num_levels, scale=scale, **kwargs)
        else:
            raise ValueError(f"`conditioner` must be 'vgg', 'unet', 'rrdb' or an nn.Module, got {conditioner!r}.")
        return net, list(net.out_channels)  # type: ignore[arg-type]
    if not isinstance(conditioner, nn.Module):
        raise TypeError(
            f"`conditioner` must be 'vgg', 'unet', 'rrdb' or an nn.Module, got {type(conditioner).__name__}."
        )
    if conditioner_kwargs:
        raise ValueError(
            "`conditioner_kwargs` only applies to a named conditioner ('vgg', 'unet' or 'rrdb'); build the "
            "module with its arguments instead."
        )
    channels = cond_channels if cond_channels is not None else getattr(conditioner, "out_channels", None)
    if channels is None or isinstance(channels, int):
        raise ValueError(
            f"cannot tell the output channels of the custom conditioner {type(conditioner).__name__}: give it an "
            "`out_channels` attribute (a list, one entry per level) or pass `cond_channels=[...]`."
        )
    channels = [int(c) for c in channels]
    if len(channels) != num_levels:
        raise ValueError(
            f"the conditioner's channels {channels} must have one entry per level (num_levels={num_levels})."
        )
    return conditioner, channels


def check_condition_image(x: Tensor, spatial_dims: int, in_channels: int, divisor: int, scale: int = 1) -> None:
    """Raise ``ValueError`` unless ``x`` is a finite ``(B, in_channels, *spatial)`` whose target size fits the flow."""
    if not isinstance(x, Tensor):
        raise TypeError(f"`x` must be a torch.Tensor, got {type(x).__name__}.")
    if x.ndim != spatial_dims + 2 or x.shape[1] != in_channels:
        raise ValueError(
            f"`x` must have shape (B, in_channels={in_channels}, *spatial) with {spatial_dims} spatial dims, got "
            f"{tuple(x.shape)}; check `in_channels` or the image transforms (e.g. EnsureChannelFirstd)."
        )
    if not torch.isfinite(x).all():
        raise ValueError("`x` contains NaN or inf; fix the image (e.g. monai.transforms.NanToNum / ScaleIntensityd).")
    for axis, size in enumerate(x.shape[2:]):
        if (size * scale) % divisor:
            k = divisor // math.gcd(divisor, scale)
            raise ValueError(
                f"`x` spatial axis {axis} has size {size}: the target size {size * scale} must be divisible by "
                f"2**num_levels = {divisor}; pad the image, e.g. monai.transforms.DivisiblePadd(keys=..., k={k})."
            )


def check_target(
    y: Tensor, x: Tensor, out_channels: int, divisor: int, scale: int, dequantization: str, num_bins: int = 256
) -> None:
    """Raise ``ValueError`` unless ``y`` matches ``x`` (size times ``scale``), the channels and the label type."""
    if not isinstance(y, Tensor):
        raise TypeError(f"`y` must be a torch.Tensor, got {type(y).__name__}.")
    if y.ndim != x.ndim or y.shape[1] != out_channels:
        raise ValueError(
            f"`y` must have shape (B, out_channels={out_channels}, *spatial) like `x` {tuple(x.shape)}, got "
            f"{tuple(y.shape)}; check `out_channels` or the label transforms."
        )
    expected = (x.shape[0], out_channels, *(s * scale for s in x.shape[2:]))
    if tuple(y.shape) != expected:
        raise ValueError(
            f"`y` has shape {tuple(y.shape)} but `x` {tuple(x.shape)} with scale={scale} implies {expected}; "
            "crop/pad image and label together (e.g. monai.transforms.DivisiblePadd on both keys)."
        )
    for axis, size in enumerate(y.shape[2:]):
        if size % divisor:
            raise ValueError(
                f"`y` spatial axis {axis} has size {size}, not divisible by 2**num_levels = {divisor}; pad, e.g. "
                f"monai.transforms.DivisiblePadd(keys=['image', 'label'], k={divisor})."
            )
    if dequantization == "binary":
        check_binary_labels(y)
    elif dequantization == "uniform":
        check_integer_labels(y, num_bins)
    elif not torch.isfinite(y).all():
        raise ValueError("`y` contains NaN or inf; clean or mask the target first.")


class ShiftHead(nn.Module):
    """A regression head on the conditioner's features: the learned part of a CNF's conditional shift.

    The factored baseline's head, built the same way (each level projected by a 1x1 conv to ``hidden_channels``,
    summed top-down with nearest 2x upsampling, upsampled once more to the target's size, then ``ReLU -> conv 3x3
    -> ReLU -> conv 1x1``), so a CNF with it holds the baseline's whole mean predictor. The last conv is
    zero-initialised: the shift starts at 0.

    Args:
        spatial_dims: 2 or 3.
        cond_channels: channels of each level's features.
        out_channels: channels of the target.
        hidden_channels: width. Defaults to 64.

    Example:
        >>> head = ShiftHead(2, [8, 16], out_channels=3, hidden_channels=8)
        >>> head([torch.rand(1, 8, 4, 4), torch.rand(1, 16, 2, 2)]).shape
        torch.Size([1, 3, 8, 8])
    """

    def __init__(self, spatial_dims: int, cond_channels: Sequence[int], out_channels: int, hidden_channels: int = 64):
        super().__init__()
        self.project, self.out = self.layers(spatial_dims, cond_channels, out_channels, hidden_channels)

    @staticmethod
    def layers(
        spatial_dims: int, cond_channels: Sequence[int], out_channels: int, hidden_channels: int
    ) -> tuple[nn.ModuleList, nn.Sequential]:
        """The head's layers ``(project, out)``, shared with :class:`~monai_cnf.networks.FactoredBaseline` (which
        keeps them as its own attributes, so its weights' keys stay ``project.*`` / ``out.*``)."""
        conv = get_conv_type(spatial_dims)
        project = nn.ModuleList([conv(int(c), hidden_channels, 1) for c in cond_channels])
        out = nn.Sequential(
            nn.ReLU(),
            conv(hidden_channels, hidden_channels, 3, padding=1),
            nn.ReLU(inplace=True),
            zero_init_(conv(hidden_channels, out_channels, 1)),
        )
        return project, out

    @staticmethod
    def combine(project: nn.ModuleList, out: nn.Module, conds: Sequence[Tensor]) -> Tensor:
        """Top-down sum of the projected levels (nearest 2x upsampling), upsampled to the target, then ``out``."""
        a = project[-1](conds[-1])
        for level in range(len(conds) - 2, -1, -1):
            a = F.interpolate(a, scale_factor=2, mode="nearest") + project[level](conds[level])
        return out(F.interpolate(a, scale_factor=2, mode="nearest"))

    def forward(self, conds: Sequence[Tensor]) -> Tensor:
        return self.combine(self.project, self.out, conds)


class ConditionalNormalizingFlow(ConditionalLikelihoodModel):
    r"""Conditional normalizing flow p(y | x) (Winkler et al., 2019): conditioner, dequantizer and conditional Glow.

    .. math::
        h_{1..L} = g(x), \quad v \sim q(v \mid y, x), \quad
        \log P(y \mid x) \ge \log p(v \mid h) - \log q(v \mid y, x)

    where ``p(v | h)`` is a :class:`~monai_cnf.networks.flows.ConditionalGlow` with ``L`` levels of ``K`` steps.
    ``dequantization="binary"`` uses the paper's half-infinite variational dequantizer (Eq. 8, labels {0, 1});
    ``"uniform"`` adds U[0, 1) noise to 8-bit integers and rescales to [0, 1) (bits/dim of the discrete data);
    ``"none"`` models continuous ``y`` exactly. With ``num_samples = K > 1``, :meth:`log_prob` returns the
    importance-weighted bound :math:`\log \frac1K \sum_k p(v_k|x)/q(v_k|y,x)` (tighter, still a lower bound).
    Internally the flow sees ``v - 0.5`` (centred; a shift has no Jacobian), which also keeps binary quantization
    exact in float32; :meth:`encode` and :meth:`decode` use ``v`` itself. With ``residual=True`` (super-resolution)
    the shift is the interpolated condition instead: the flow models ``v - b(x)``, where ``b(x)`` is ``x`` upsampled
    bilinearly to the target (in ``v``'s units: ``(255 b + 0.5) / 256`` for 8-bit targets). That shift is
    conditional and volume preserving (log-det 0), so :meth:`log_prob` needs no correction, and the temperature-0
    prediction starts at the interpolated image, as the factored baseline's mean does (``residual=True`` there).
    ``learned_shift=True`` adds a regression head on the conditioner's features (:class:`ShiftHead`, the factored
    baseline's head) to that shift: the flow models ``v - b(x) - r(h)/2``. It still does not depend on ``v``, so
    it is volume preserving too; it is trained by the likelihood alone, like the rest of the model.
    Under ``torch.autocast`` (mixed precision) only the conditioner runs in low precision: its features are cast
    to float32 and the flow, its log-determinants, the prior and the dequantizer run with autocast disabled.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the conditioning image ``x``.
        out_channels: channels of the target ``y``.
        num_levels: flow levels L; target sizes must be divisible by ``2**L``. Defaults to 2.
        num_steps: flow steps K per level. Defaults to 8.
        hidden_channels: width of the coupling subnets. Defaults to 64.
        conditioner: ``"vgg"``, ``"unet"``, ``"rrdb"`` or an ``nn.Module`` returning one feature map per level
            (``conds[l]`` at the target's size / ``2**(l + 1)``). Defaults to ``"vgg"``.
        coupling: ``"additive"`` (volume preserving, the paper's DRIVE model) or ``"affine"``.
            Defaults to ``"additive"``.
        dequantization: ``"binary"``, ``"uniform"`` or ``"none"``. Defaults to ``"binary"``.
        conditioner_kwargs: arguments of the named conditioner (e.g. ``{"feature_channels": (32, 64)}``, or
            ``{"num_blocks": 16, "growth_channels": 32}`` for RRDB). Defaults to None.
        dequantizer_kwargs: arguments of the dequantizer (binary: ``num_steps``, ``hidden_channels``,
            ``coupling``; uniform: ``num_bins``). Defaults to None.
        scale: target size / ``x`` size (2 for 2x super-resolution, where ``x`` is the LR image). Defaults to 1.
        cond_channels: channels per level of a custom conditioner without ``out_channels``. Defaults to None.
        clamp: soft clamp of affine log-scales. Defaults to 2.0.
        residual: model the target as a correction of the interpolated ``x`` (above); needs
            ``in_channels == out_channels`` and ``dequantization="uniform"`` or ``"none"``. Defaults to False.
        learned_shift: add the regression head's output to the shift (above; needs ``residual``). Defaults to False.
        use_checkpoint: recompute the conditioner's activations in backward (activation checkpointing,
            :func:`~monai_cnf.networks.checkpointing.checkpointed`): less training memory for one more conditioner
            forward per step; the results are the same. Defaults to False.

    Example:
        >>> model = ConditionalNormalizingFlow(spatial_dims=2, in_channels=3, out_channels=1, num_levels=2,
        ...     num_steps=2, hidden_channels=16, conditioner_kwargs={"feature_channels": (8, 16)},
        ...     dequantizer_kwargs={"num_steps": 1, "hidden_channels": 8})
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
        num_steps: int = 8,
        hidden_channels: int = 64,
        conditioner: str | nn.Module = "vgg",
        coupling: str = "additive",
        dequantization: str = "binary",
        conditioner_kwargs: dict[str, Any] | None = None,
        dequantizer_kwargs: dict[str, Any] | None = None,
        scale: int = 1,
        cond_channels: Sequence[int] | None = None,
        clamp: float = 2.0,
        residual: bool = False,
        learned_shift: bool = False,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"`spatial_dims` must be 2 or 3, got {spatial_dims}.")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"`in_channels` and `out_channels` must be >= 1, got {in_channels}, {out_channels}.")
        if dequantization not in DEQUANTIZATIONS:
            raise ValueError(f"`dequantization` must be one of {DEQUANTIZATIONS}, got {dequantization!r}.")
        if int(scale) != scale or scale < 1:
            raise ValueError(f"`scale` must be a positive integer (target size / x size), got {scale}.")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_levels = num_levels
        self.scale = int(scale)
        self.dequantization = dequantization
        self.use_checkpoint = bool(use_checkpoint)
        self.conditioner, self.cond_channels = build_conditioner(
            conditioner, spatial_dims, in_channels, num_levels, self.scale, conditioner_kwargs, cond_channels
        )
        self.flow = ConditionalGlow(
            spatial_dims, out_channels, self.cond_channels, num_levels, num_steps, hidden_channels, coupling, clamp
        )
        deq_kwargs = dict(dequantizer_kwargs or {})
        self.dequantizer: BinaryDequantizer | UniformDequantizer | None
        if dequantization == "binary":
            self.dequantizer = BinaryDequantizer(
                spatial_dims, out_channels, context_channels=in_channels + self.cond_channels[0], **deq_kwargs
            )
        elif dequantization == "uniform":
            self.dequantizer = UniformDequantizer(**deq_kwargs)
        else:
            if deq_kwargs:
                raise ValueError("`dequantizer_kwargs` given but dequantization='none' has no dequantizer.")
            self.dequantizer = None
        self.shift = 0.0 if dequantization == "none" else 0.5
        self.residual = bool(residual)
        if self.residual and (dequantization == "binary" or in_channels != out_channels):
            raise ValueError(
                "`residual=True` models the target as a correction of the interpolated condition, so it needs "
                f"in_channels == out_channels (got {in_channels}, {out_channels}) and 8-bit or continuous targets "
                f"(dequantization 'uniform' or 'none', got {dequantization!r})."
            )
        if learned_shift and not self.residual:
            raise ValueError("`learned_shift=True` refines the interpolated image: it needs `residual=True`.")
        self.shift_head = (
            ShiftHead(spatial_dims, self.cond_channels, out_channels, hidden_channels) if learned_shift else None
        )

    @property
    def divisor(self) -> int:
        """Target spatial sizes must be divisible by this (``2**num_levels``)."""
        return 2**self.num_levels

    @property
    def task(self) -> Task:
        """Binary labels: segmentation; 8-bit targets: super-resolution; no dequantization: continuous ``y``."""
        return {"binary": Task.segmentation, "uniform": Task.super_resolution}.get(self.dequantization, Task.continuous)

    # ------------------------------------------------------------------ helpers
    def _conds(self, x: Tensor) -> list[Tensor]:
        check_condition_image(x, self.spatial_dims, self.in_channels, self.divisor, self.scale)
        # the one part that runs in low precision under autocast
        conds = checkpointed(self.conditioner, x) if self.use_checkpoint else self.conditioner(x)
        if isinstance(conds, Tensor) or len(conds) != self.num_levels:
            raise ValueError(
                f"the conditioner must return a list of num_levels={self.num_levels} feature maps, got "
                f"{'a Tensor' if isinstance(conds, Tensor) else len(conds)}."
            )
        for level, (h, c) in enumerate(zip(conds, self.cond_channels, strict=True)):
            expected = (x.shape[0], c, *(s * self.scale // 2 ** (level + 1) for s in x.shape[2:]))
            if tuple(h.shape) != expected:
                raise ValueError(
                    f"the conditioner returned conds[{level}] of shape {tuple(h.shape)}; the flow needs {expected} "
                    f"(the target's size / 2**{level + 1} with {c} channels)."
                )
        return [_full(h) for h in conds]

    def _context(self, x: Tensor, conds: Sequence[Tensor]) -> Tensor:
        """Full-resolution context of the binary dequantizer: ``[x (resized to the target), upsampled conds[0]]``."""
        if self.scale != 1:
            x = F.interpolate(x, scale_factor=self.scale, mode="bilinear" if self.spatial_dims == 2 else "trilinear")
        return torch.cat([x, F.interpolate(conds[0], scale_factor=2, mode="nearest")], dim=1)

    def _offset(self, x: Tensor, conds: Sequence[Tensor] | None = None) -> Tensor | float:
        """What the flow's input is shifted by: ``v = w + offset``; 0.5 (or 0), or the interpolated ``x`` (residual),
        plus the shift head's output on ``conds`` (learned shift).

        The offset does not depend on ``v``, so the shift's log-determinant is 0.
        """
        if not self.residual:
            return self.shift
        base = x
        if self.scale != 1:
            mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
            base = F.interpolate(x, scale_factor=self.scale, mode=mode, align_corners=False)
        if self.dequantization == "uniform":
            # x holds grey levels / 255 and v = (y + u) / num_bins: the centre of the bin of 255 * base
            num_bins = self.dequantizer.num_bins  # type: ignore[union-attr]
            base = ((num_bins - 1) * base + 0.5) / num_bins
        if self.shift_head is not None:
            if conds is None:
                raise ValueError("the learned shift needs the conditioner's features.")
            # r in units of half the range, as the factored baseline's 127.5 * r grey levels
            base = base + 0.5 * self.shift_head(conds)
        return base

    def _quantize_centred(self, w: Tensor, offset: Tensor | float) -> Tensor:
        """Quantize a flow output ``w = v - offset`` to labels."""
        if self.dequantization == "binary":
            return (w > 0).to(w.dtype)
        if self.dequantization == "uniform":
            return self.dequantizer.quantize(w + offset)  # type: ignore[union-attr]
        return w + offset

    @staticmethod
    def _repeat(t: Tensor, k: int) -> Tensor:
        return t if k == 1 else t.repeat(k, *([1] * (t.ndim - 1)))

    # ------------------------------------------------------------------ density
    def log_prob(self, y: Tensor, x: Tensor, num_samples: int = 1, generator: torch.Generator | None = None) -> Tensor:
        """Log-likelihood of ``y`` given ``x`` in nats, shape ``(B,)``.

        Exact for ``dequantization="none"``; otherwise the (importance-weighted, ``num_samples`` draws of ``v``)
        dequantization lower bound of ``log P(y | x)``. The conditioner runs once; the ``num_samples`` draws are
        batched (memory grows with ``num_samples``).

        Args:
            y: target ``(B, out_channels, *spatial)``: {0, 1} (binary), integers in [0, 255] (uniform) or reals.
            x: condition ``(B, in_channels, *spatial / scale)``.
            num_samples: dequantization samples K. Defaults to 1.
            generator: random generator of the dequantization noise. Defaults to None.
        """
        if int(num_samples) < 1:
            raise ValueError(f"`num_samples` must be >= 1, got {num_samples}.")
        conds = self._conds(x)
        num_bins = getattr(self.dequantizer, "num_bins", 256)
        check_target(y, x, self.out_channels, self.divisor, self.scale, self.dequantization, num_bins)
        with _float32(x):
            if self.dequantizer is None:
                return self.flow.log_prob(_full(y) - self._offset(_full(x), conds), conds)
            k = int(num_samples)
            context = self._context(_full(x), conds) if isinstance(self.dequantizer, BinaryDequantizer) else None
            y_k = self._repeat(_full(y), k)
            ctx_k = None if context is None else self._repeat(context, k)
            v, log_q = self.dequantizer(y_k, ctx_k, generator=generator)
            offset = self._offset(_full(x), conds)
            offset = self._repeat(offset, k) if isinstance(offset, Tensor) else offset
            log_p = self.flow.log_prob(v - offset, [self._repeat(h, k) for h in conds])
            log_w = log_p - log_q
        if k == 1:
            return log_w
        return torch.logsumexp(log_w.view(k, y.shape[0]), dim=0) - math.log(k)

    # ------------------------------------------------------------------ latents
    def encode(self, v: Tensor, x: Tensor) -> list[Tensor]:
        """Standardised latents of the dequantized ``v`` (coarse last); :meth:`decode` is the exact inverse."""
        conds = self._conds(x)
        with _float32(x):
            return self.flow.encode(_full(v) - self._offset(_full(x), conds), conds)

    def decode(self, zs: Sequence[Tensor], x: Tensor) -> Tensor:
        """Map latents (as from :meth:`encode`) back to ``v`` (not quantized)."""
        conds = self._conds(x)
        with _float32(x):
            return self.flow.decode([_full(z) for z in zs], conds) + self._offset(_full(x), conds)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(
        self,
        x: Tensor,
        num_samples: int = 4,
        temperature: float = 0.8,
        generator: torch.Generator | None = None,
        chunk_size: int | None = None,
    ) -> Tensor:
        """Draw labels ``y ~ p(y | x)`` at a temperature.

        The conditioner runs once per ``x``; samples are decoded ``chunk_size`` at a time (each flow pass holds
        ``chunk_size * B`` images: raise it on a GPU with memory to spare). Binary samples are exactly {0, 1};
        8-bit samples are integers in [0, 255].

        Args:
            x: condition ``(B, in_channels, *spatial)``.
            num_samples: number of samples S. Defaults to 4.
            temperature: latent noise scale (0: the deterministic prediction). Defaults to 0.8.
            generator: random generator. Defaults to None.
            chunk_size: samples per flow pass; None: 1. Defaults to None.

        Returns:
            ``(S, B, out_channels, *target_spatial)``.
        """
        return torch.cat(list(self.sample_chunks(x, num_samples, temperature, generator, chunk_size)), dim=0)

    @torch.no_grad()
    def sample_chunks(
        self,
        x: Tensor,
        num_samples: int = 4,
        temperature: float = 0.8,
        generator: torch.Generator | None = None,
        chunk_size: int | None = None,
    ) -> Iterator[Tensor]:
        """:meth:`sample`'s samples ``chunk_size`` at a time, ``(k, B, out_channels, *target_spatial)``; the
        conditioner runs once, before the first chunk."""
        self.check_sampling(num_samples, temperature, chunk_size)
        chunk = int(chunk_size or self.default_chunk_size)
        conds = self._conds(x)
        target = (x.shape[0], self.out_channels, *(s * self.scale for s in x.shape[2:]))
        shapes = self.flow.latent_shapes(target)
        with _float32(x):
            offset = self._offset(_full(x), conds)
        done = 0
        while done < num_samples:
            k = min(chunk, num_samples - done)
            # noise is drawn sample by sample, so a generator gives the same samples for any chunk_size
            if temperature == 0:
                zs = [x.new_zeros((k * shape[0], *shape[1:])) for shape in shapes]
            else:
                draws = [
                    [torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype) for shape in shapes]
                    for _ in range(k)
                ]
                zs = [torch.cat([d[i] for d in draws], dim=0) * temperature for i in range(len(shapes))]
            with _float32(x):
                w = self.flow.decode([_full(z) for z in zs], [self._repeat(h, k) for h in conds])
            off = self._repeat(offset, k) if isinstance(offset, Tensor) else offset
            yield self._quantize_centred(w, off).view(k, x.shape[0], *w.shape[1:])
            done += k

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        """Temperature-0 prediction ``(B, out_channels, *target_spatial)``: decode every prior's mean, quantize.

        Deterministic, so MONAI inferers (e.g. ``SlidingWindowInferer``) and bundle tools can call the model.
        """
        return self.sample(x, num_samples=1, temperature=0.0)[0]


def _float32(x: Tensor) -> Any:
    """Autocast off for the flow part (log-determinants and log-densities in float32); a no-op without autocast."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def _full(t: Tensor) -> Tensor:
    """``t`` in float32 when autocast made it float16/bfloat16; any other dtype (float32, float64) unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
