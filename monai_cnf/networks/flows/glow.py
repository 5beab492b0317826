"""Glow flow step and the multi-scale conditional Glow (Kingma & Dhariwal, 2018; Winkler et al., 2019)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..conditioners.subnets import SubnetFactory
from .actnorm import ActNorm
from .base import FlowLayer, FlowSequential, check_input, spatial_numel
from .coupling import AffineCoupling
from .invconv import InvConv, conv1x1
from .priors import GaussianPrior, SplitPrior
from .squeeze import Squeeze, unsqueeze

__all__ = ["ConditionalGlow", "FlowStep"]


class FlowStep(FlowLayer):
    """One Glow step: ActNorm -> invertible 1x1 conv -> (conditional) coupling.

    ActNorm and the 1x1 conv are both per-position linear maps; they are fused into one 1x1 conv with bias
    (:math:`W \\mathrm{diag}(e^{s})`, :math:`W b e^{s}`), which saves a pass over the activations and the memory
    autograd would keep for it. The fused map is exactly the composition, and the submodules stay separate
    (``actnorm``, ``invconv``, ``coupling``) for their state and for inspection.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        in_channels: channels of ``x``.
        cond_channels: channels of ``cond`` at the step's resolution; 0 for unconditional. Defaults to 0.
        hidden_channels: hidden width of the coupling subnet. Defaults to 64.
        coupling: ``"affine"`` or ``"additive"``. Defaults to ``"affine"``.
        clamp: soft clamp of the affine log-scale. Defaults to 2.0.
        lu: LU-parametrised 1x1 conv. Defaults to True.
        subnet: coupling subnet factory ``subnet(in_channels, out_channels)``. Defaults to None (the default conv net).

    >>> import torch
    >>> step = FlowStep(spatial_dims=2, in_channels=4, cond_channels=8, hidden_channels=16)
    >>> x, h = torch.randn(2, 4, 8, 8), torch.randn(2, 8, 8, 8)
    >>> z, logdet = step(x, h)
    >>> torch.allclose(step.inverse(z, h), x, atol=1e-5)
    True
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        cond_channels: int = 0,
        hidden_channels: int = 64,
        coupling: str = "affine",
        clamp: float = 2.0,
        lu: bool = True,
        subnet: SubnetFactory | None = None,
    ) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.cond_channels = cond_channels
        self.actnorm = ActNorm(in_channels, spatial_dims)
        self.invconv = InvConv(in_channels, spatial_dims, lu=lu)
        self.coupling = AffineCoupling(
            spatial_dims, in_channels, cond_channels, hidden_channels, coupling=coupling, clamp=clamp, subnet=subnet
        )

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_input("FlowStep input", x, self.spatial_dims, self.in_channels)
        self.actnorm.maybe_initialize(x)
        scale, shift = self.actnorm.affine()
        weight = self.invconv.weight_matrix()
        # W (x * scale + shift) = (W diag(scale)) x + W shift
        y = conv1x1(x, weight * scale.reshape(1, -1), weight @ shift.reshape(-1))
        log_det_linear = (self.actnorm.log_scale.sum() + self.invconv.log_abs_det()) * spatial_numel(x)
        z, logdet = self.coupling(y, cond)
        return z, logdet + log_det_linear

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        check_input("FlowStep input", z, self.spatial_dims, self.in_channels)
        y = self.coupling.inverse(z, cond)
        # x = diag(1/scale) W^-1 y - bias
        inv = self.invconv.inverse_matrix() * torch.exp(-self.actnorm.log_scale).reshape(-1, 1)
        return conv1x1(y, inv, -self.actnorm.bias.reshape(-1))


def _as_level_list(cond_channels: Sequence[int] | int | None, num_levels: int) -> list[int]:
    if cond_channels is None:
        return [0] * num_levels
    if isinstance(cond_channels, int):
        values = [cond_channels] * num_levels
    else:
        values = [int(c) for c in cond_channels]
        if len(values) != num_levels:
            raise ValueError(
                f"cond_channels must have one entry per level (num_levels={num_levels}), got {list(cond_channels)}."
            )
    if any(c < 0 for c in values):
        raise ValueError(f"cond_channels must be >= 0, got {values}.")
    return values


class ConditionalGlow(nn.Module):
    """Multi-scale conditional Glow: ``L`` levels of [Squeeze -> K FlowSteps -> SplitPrior] and a Gaussian prior.

    .. math::
        \\log p(y \\mid h) = \\sum_l \\Big( \\sum_k \\log|\\det J_{l,k}| + \\log p(z^{(l)}_d \\mid z^{(l)}_k, h_l)
        \\Big) + \\log p(z^{(L)} \\mid h_L)

    Level ``l`` (0-based) works on the target squeezed ``l + 1`` times and is conditioned on ``conds[l]``,
    ``(B, cond_channels[l], *spatial / 2**(l + 1))``; the split prior closes every level but the last, and the
    final Gaussian prior uses ``conds[-1]``. Latents (:meth:`encode` / :meth:`decode`) are *standardised*:
    ``eps = (z - mu) / sigma`` per prior, one tensor per level (coarse last), N(0, I) under the model;
    ``decode(encode(y))`` reproduces ``y`` up to floating-point round-off, and ``sample`` is ``decode`` of
    ``temperature * N(0, I)`` noise.

    Performance: ActNorm and the 1x1 conv of each step run as one fused conv; the default coupling subnet keeps
    neither the ``[x, cond]`` concatenation nor its second hidden map for backward (about half the activation memory
    of an ordinary implementation, see ``benchmarks/flow_speed.py``; pass
    ``subnet=conv_subnet_factory(spatial_dims, hidden_channels, recompute_hidden=False)`` to trade that memory for a
    few % of speed). 2D inputs in ``torch.channels_last`` format (model included) stay in it.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        in_channels: channels of the target ``y``.
        cond_channels: conditioning channels per level (a list of ``num_levels`` ints), one int for all levels, or
            None / 0 for an unconditional flow. Defaults to None.
        num_levels: number of levels ``L``; spatial sizes must be divisible by ``2**L``. Defaults to 2.
        num_steps: flow steps ``K`` per level. Defaults to 8.
        hidden_channels: hidden width of the coupling subnets. Defaults to 64.
        coupling: ``"affine"`` or ``"additive"`` (volume preserving). Defaults to ``"affine"``.
        clamp: soft clamp of the affine log-scale. Defaults to 2.0.
        lu: LU-parametrised 1x1 convs. Defaults to True.
        subnet: coupling subnet factory ``subnet(in_channels, out_channels)``. Defaults to None (the default net).

    >>> import torch
    >>> flow = ConditionalGlow(spatial_dims=2, in_channels=1, cond_channels=[8, 16], num_levels=2, num_steps=2,
    ...                        hidden_channels=16, coupling="additive")
    >>> conds = [torch.randn(3, 8, 8, 8), torch.randn(3, 16, 4, 4)]
    >>> y = flow.sample(conds, temperature=0.8)
    >>> y.shape, flow.log_prob(y, conds).shape
    (torch.Size([3, 1, 16, 16]), torch.Size([3]))
    >>> import torch
    >>> torch.allclose(flow.decode(flow.encode(y, conds), conds), y, atol=1e-5)
    True
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        cond_channels: Sequence[int] | int | None = None,
        num_levels: int = 2,
        num_steps: int = 8,
        hidden_channels: int = 64,
        coupling: str = "affine",
        clamp: float = 2.0,
        lu: bool = True,
        subnet: SubnetFactory | None = None,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}.")
        if num_levels < 1 or num_steps < 1:
            raise ValueError(f"num_levels and num_steps must be >= 1, got {num_levels} and {num_steps}.")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.num_levels = num_levels
        self.num_steps = num_steps
        self.cond_channels = _as_level_list(cond_channels, num_levels)
        self.squeeze = Squeeze(spatial_dims)
        factor = 2**spatial_dims
        self.steps = nn.ModuleList()
        self.splits = nn.ModuleList()
        self.level_channels: list[int] = []  # channels inside each level (after its squeeze)
        channels = in_channels
        for level in range(num_levels):
            channels *= factor
            self.level_channels.append(channels)
            cc = self.cond_channels[level]
            self.steps.append(
                FlowSequential(
                    [
                        FlowStep(spatial_dims, channels, cc, hidden_channels, coupling, clamp, lu, subnet)
                        for _ in range(num_steps)
                    ]
                )
            )
            if level < num_levels - 1:
                split = SplitPrior(spatial_dims, channels, cc)
                self.splits.append(split)
                channels = split.kept_channels
        self.prior = GaussianPrior(spatial_dims, channels, self.cond_channels[-1])

    @property
    def conditional(self) -> bool:
        """Whether any level needs conditioning features."""
        return any(c > 0 for c in self.cond_channels)

    @property
    def divisor(self) -> int:
        """Every spatial size of ``y`` must be divisible by this (``2**num_levels``)."""
        return 2**self.num_levels

    # ------------------------------------------------------------------ shapes and checks
    def target_shape(
        self,
        conds: Sequence[Tensor | None] | None = None,
        batch_size: int | None = None,
        spatial_size: Sequence[int] | None = None,
    ) -> tuple[int, ...]:
        """Shape ``(B, in_channels, *spatial)`` of ``y`` implied by ``conds`` (or by ``batch_size``/``spatial_size``).

        The spatial size is ``2**(l + 1)`` times that of ``conds[l]`` (e.g. twice ``conds[0]``'s).

        Args:
            conds: conditioning features, one per level (None entries for unconditional levels). Defaults to None.
            batch_size: batch size, needed when the flow is unconditional. Defaults to None.
            spatial_size: spatial size of ``y``, needed when the flow is unconditional. Defaults to None.
        """
        if conds is not None:
            for level, cond in enumerate(conds):
                if isinstance(cond, Tensor):
                    scale = 2 ** (level + 1)
                    return (cond.shape[0], self.in_channels, *(int(s) * scale for s in cond.shape[2:]))
        if batch_size is None or spatial_size is None:
            raise ValueError(
                "the target shape is not implied by conds (the flow is unconditional); pass batch_size and "
                "spatial_size."
            )
        if len(spatial_size) != self.spatial_dims:
            raise ValueError(f"spatial_size must have {self.spatial_dims} entries, got {tuple(spatial_size)}.")
        return (int(batch_size), self.in_channels, *(int(s) for s in spatial_size))

    def latent_shapes(self, target_shape: Sequence[int]) -> list[tuple[int, ...]]:
        """Shapes of the latents returned by :meth:`encode` for a target of shape ``(B, C, *spatial)``."""
        batch, spatial = int(target_shape[0]), [int(s) for s in target_shape[2:]]
        self._check_divisible(spatial, tuple(target_shape))
        shapes: list[tuple[int, ...]] = []
        for level in range(self.num_levels):
            spatial = [s // 2 for s in spatial]
            if level < self.num_levels - 1:
                shapes.append((batch, self.splits[level].dropped_channels, *spatial))
        shapes.append((batch, self.prior.in_channels, *spatial))
        return shapes

    def _check_divisible(self, spatial: Sequence[int], shape: tuple[int, ...]) -> None:
        k = self.divisor
        for axis, size in enumerate(spatial):
            if size % k:
                raise ValueError(
                    f"ConditionalGlow with num_levels={self.num_levels} needs every spatial size divisible by "
                    f"2**num_levels = {k}, but spatial axis {axis} has size {size} (shape {shape}); pad the data, "
                    f"e.g. with monai.transforms.DivisiblePadd(keys=..., k={k})."
                )

    def _check_conds(self, conds: Sequence[Tensor | None] | None, target: tuple[int, ...]) -> list[Tensor | None]:
        if not self.conditional:
            if conds is not None and any(c is not None for c in conds):
                raise ValueError("this ConditionalGlow is unconditional (cond_channels=0); pass conds=None.")
            return [None] * self.num_levels
        if conds is None or isinstance(conds, Tensor) or len(conds) != self.num_levels:
            got = "None" if conds is None else ("a Tensor" if isinstance(conds, Tensor) else f"{len(conds)}")
            raise ValueError(
                f"ConditionalGlow expects a list of num_levels={self.num_levels} conds (one feature map per level), "
                f"got {got}."
            )
        out: list[Tensor | None] = []
        for level, (cond, cc) in enumerate(zip(conds, self.cond_channels, strict=True)):
            scale = 2 ** (level + 1)
            expected = (target[0], cc, *(s // scale for s in target[2:]))
            if cc == 0:
                if cond is not None:
                    raise ValueError(
                        f"level {level} is unconditional (cond_channels[{level}]=0); pass conds[{level}]=None."
                    )
                out.append(None)
                continue
            if not isinstance(cond, Tensor) or tuple(cond.shape) != expected:
                got = tuple(cond.shape) if isinstance(cond, Tensor) else None
                raise ValueError(
                    f"conds[{level}] must have shape (B, cond_channels[{level}], *target_spatial / {scale}) = "
                    f"{expected}, got {got}."
                )
            out.append(cond)
        return out

    def _check_target(self, y: Tensor, conds: Sequence[Tensor | None] | None) -> list[Tensor | None]:
        check_input("ConditionalGlow target y", y, self.spatial_dims, self.in_channels)
        self._check_divisible(y.shape[2:], tuple(y.shape))
        if not torch.isfinite(y).all():
            raise ValueError("ConditionalGlow target y contains NaN or inf values; clean or mask the data first.")
        return self._check_conds(conds, tuple(y.shape))

    # ------------------------------------------------------------------ density and latents
    def encode_with_log_prob(
        self, y: Tensor, conds: Sequence[Tensor | None] | None = None
    ) -> tuple[list[Tensor], Tensor]:
        """Return the standardised latents (coarse last) and ``log p(y | conds)`` ``(B,)`` in one pass."""
        level_conds = self._check_target(y, conds)
        z = y
        log_p = y.new_zeros(y.shape[0])
        latents: list[Tensor] = []
        for level in range(self.num_levels):
            cond = level_conds[level]
            z, _ = self.squeeze(z)
            z, logdet = self.steps[level](z, cond)
            log_p = log_p + logdet
            if level < self.num_levels - 1:
                z, eps, lp = self.splits[level].encode(z, cond)
                latents.append(eps)
                log_p = log_p + lp
        eps, lp = self.prior.encode(z, level_conds[-1])
        latents.append(eps)
        return latents, log_p + lp

    def log_prob(self, y: Tensor, conds: Sequence[Tensor | None] | None = None) -> Tensor:
        """``log p(y | conds)`` in nats, shape ``(B,)``.

        Args:
            y: target ``(B, in_channels, *spatial)``, spatial sizes divisible by ``2**num_levels``.
            conds: one feature map per level, ``conds[l]`` of shape ``(B, cond_channels[l], *spatial / 2**(l+1))``;
                None for an unconditional flow. Defaults to None.
        """
        return self.encode_with_log_prob(y, conds)[1]

    def forward(self, y: Tensor, conds: Sequence[Tensor | None] | None = None) -> Tensor:
        """Same as :meth:`log_prob`."""
        return self.log_prob(y, conds)

    def encode(self, y: Tensor, conds: Sequence[Tensor | None] | None = None) -> list[Tensor]:
        """Standardised latents ``[eps_split_0, ..., eps_split_{L-2}, eps_prior]`` (coarse last); see :meth:`decode`."""
        return self.encode_with_log_prob(y, conds)[0]

    def decode(self, zs: Sequence[Tensor], conds: Sequence[Tensor | None] | None = None) -> Tensor:
        """Map standardised latents (as from :meth:`encode`) back to ``y``: the exact inverse of :meth:`encode`."""
        if len(zs) != self.num_levels:
            raise ValueError(f"decode expects num_levels={self.num_levels} latents (coarse last), got {len(zs)}.")
        scale = 2**self.num_levels
        final = zs[-1]
        check_input("ConditionalGlow latent zs[-1]", final, self.spatial_dims, self.prior.in_channels)
        target = (final.shape[0], self.in_channels, *(int(s) * scale for s in final.shape[2:]))
        expected = self.latent_shapes(target)
        for i, (z_i, shape) in enumerate(zip(zs, expected, strict=True)):
            if tuple(z_i.shape) != shape:
                raise ValueError(f"latent zs[{i}] must have shape {shape} (target {target}), got {tuple(z_i.shape)}.")
        return self._decode(list(zs), self._check_conds(conds, target))

    def _decode(self, zs: list[Tensor], level_conds: list[Tensor | None]) -> Tensor:
        z = self.prior.sample(level_conds[-1], eps=zs[-1])
        for level in reversed(range(self.num_levels)):
            cond = level_conds[level]
            if level < self.num_levels - 1:
                z = self.splits[level].inverse(z, cond, eps=zs[level])
            z = self.steps[level].inverse(z, cond)
            z = unsqueeze(z)
        return z

    def sample(
        self,
        conds: Sequence[Tensor | None] | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        *,
        batch_size: int | None = None,
        spatial_size: Sequence[int] | None = None,
    ) -> Tensor:
        """Draw ``y ~ p(y | conds)`` at a temperature: every prior samples ``mu + temperature * sigma * eps``.

        Args:
            conds: one feature map per level (see :meth:`log_prob`); the output spatial size is twice that of
                ``conds[0]``. Defaults to None.
            temperature: latent noise scale; 0 is deterministic (every prior's mean). Defaults to 1.0.
            generator: random generator for the latent noise. Defaults to None.
            batch_size: unconditional flows only: number of samples. Defaults to None.
            spatial_size: unconditional flows only: spatial size of ``y``. Defaults to None.

        Returns:
            ``(B, in_channels, *spatial)``.
        """
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}.")
        target = self.target_shape(conds, batch_size, spatial_size)
        level_conds = self._check_conds(conds, target)
        ref = next((c for c in level_conds if c is not None), None)
        param = next(self.parameters())
        device = ref.device if ref is not None else param.device
        dtype = ref.dtype if ref is not None else param.dtype
        zs = []
        for shape in self.latent_shapes(target):
            if temperature == 0:
                zs.append(torch.zeros(shape, device=device, dtype=dtype))
            else:
                zs.append(torch.randn(shape, generator=generator, device=device, dtype=dtype) * temperature)
        return self._decode(zs, level_conds)
