"""Conditional affine / additive coupling layer."""

from __future__ import annotations

import torch
from torch import Tensor

from ..conditioners.subnets import SubnetFactory, conv_subnet_factory
from .base import FlowLayer, check_cond, check_input

__all__ = ["AffineCoupling"]

COUPLINGS = ("affine", "additive")


class AffineCoupling(FlowLayer):
    """Conditional coupling layer (Dinh et al., 2016) on a channel split, conditioned on a feature map.

    The input is split into a passive part ``x_a`` (the first ``C - C // 2`` channels) and an active part ``x_b``
    (the last ``C // 2``). A network sees ``[x_a, cond]`` and outputs a shift ``t`` and a raw scale ``r``:

    .. math::
        z_a = x_a, \\quad z_b = x_b \\odot e^{s} + t, \\quad s = c \\tanh(r / c), \\quad
        \\log|\\det J| = \\sum s

    (``coupling="affine"``, soft-clamped log-scale as in FrEIA), or :math:`z_b = x_b + t` with
    :math:`\\log|\\det J| = 0` (``coupling="additive"``, volume preserving). The last layer of the default subnet is
    zero-initialised, so the layer starts as the identity. With ``in_channels == 1`` the whole channel is active
    and the network sees only ``cond`` (a conditional element-wise affine map; needs ``cond_channels > 0``).

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        in_channels: channels ``C`` of ``x``.
        cond_channels: channels of ``cond`` ``(B, cond_channels, *spatial)``; 0 for an unconditional layer.
            Defaults to 0.
        hidden_channels: hidden width of the default subnet. Defaults to 64.
        coupling: ``"affine"`` or ``"additive"``. Defaults to ``"affine"``.
        clamp: soft clamp ``c`` of the log-scale (affine only). Defaults to 2.0.
        subnet: factory ``subnet(in_channels, out_channels) -> nn.Module``; None uses
            :func:`~monai_cnf.networks.conditioners.subnets.conv_subnet_factory`. Defaults to None.

    >>> import torch
    >>> layer = AffineCoupling(spatial_dims=2, in_channels=4, cond_channels=8, hidden_channels=16)
    >>> x, h = torch.randn(2, 4, 8, 8), torch.randn(2, 8, 8, 8)
    >>> z, logdet = layer(x, h)
    >>> torch.allclose(layer.inverse(z, h), x), logdet.shape
    (True, torch.Size([2]))
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        cond_channels: int = 0,
        hidden_channels: int = 64,
        coupling: str = "affine",
        clamp: float = 2.0,
        subnet: SubnetFactory | None = None,
    ) -> None:
        super().__init__()
        if coupling not in COUPLINGS:
            raise ValueError(f"coupling must be one of {COUPLINGS}, got {coupling!r}.")
        if in_channels < 1 or cond_channels < 0:
            raise ValueError(f"in_channels must be >= 1 and cond_channels >= 0, got {in_channels}, {cond_channels}.")
        if in_channels == 1 and cond_channels == 0:
            raise ValueError(
                "an unconditional AffineCoupling needs in_channels >= 2 (it has nothing to condition on with 1 "
                "channel); squeeze the input first (Squeeze) or give cond_channels > 0."
            )
        if clamp <= 0:
            raise ValueError(f"clamp must be positive, got {clamp}.")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.cond_channels = cond_channels
        self.coupling = coupling
        self.clamp = float(clamp)
        self.passive_channels = in_channels - in_channels // 2 if in_channels > 1 else 0
        self.active_channels = in_channels - self.passive_channels
        factory = subnet if subnet is not None else conv_subnet_factory(spatial_dims, hidden_channels)
        out = self.active_channels * (2 if coupling == "affine" else 1)
        self.net = factory(self.passive_channels + cond_channels, out)

    def _check(self, x: Tensor, cond: Tensor | None) -> None:
        check_input("AffineCoupling input", x, self.spatial_dims, self.in_channels)
        check_cond("AffineCoupling", x, cond, self.cond_channels)

    def _params(self, x_a: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Return the shift ``t`` and the clamped log-scale ``s`` (None for additive)."""
        if cond is None:
            h = self.net(x_a)
        elif hasattr(self.net, "forward_split"):  # the default subnet: no per-step copy of cond (see ConvSubnet)
            h = self.net.forward_split(x_a if self.passive_channels else None, cond)
        elif self.passive_channels == 0:
            h = self.net(cond)
        else:
            h = self.net(torch.cat([x_a, cond], dim=1))
        if self.coupling == "additive":
            return h, None
        shift, raw = h[:, : self.active_channels], h[:, self.active_channels :]
        return shift, torch.tanh(raw / self.clamp) * self.clamp

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check(x, cond)
        x_a, x_b = x[:, : self.passive_channels], x[:, self.passive_channels :]
        shift, log_s = self._params(x_a, cond)
        if log_s is None:
            z_b = x_b + shift
            logdet = x.new_zeros(x.shape[0])
        else:
            z_b = torch.addcmul(shift, x_b, log_s.exp())
            logdet = log_s.flatten(1).sum(1)
        if self.passive_channels == 0:
            return z_b, logdet
        return torch.cat([x_a, z_b], dim=1), logdet

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        self._check(z, cond)
        z_a, z_b = z[:, : self.passive_channels], z[:, self.passive_channels :]
        shift, log_s = self._params(z_a, cond)
        x_b = z_b - shift if log_s is None else (z_b - shift) * torch.exp(-log_s)
        if self.passive_channels == 0:
            return x_b
        return torch.cat([z_a, x_b], dim=1)
