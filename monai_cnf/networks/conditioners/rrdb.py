"""ESRGAN's Residual-in-Residual Dense Block trunk (Wang et al., 2018) as a multi-level flow conditioner."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from monai_cnf.networks.conditioners.subnets import get_conv_type
from monai_cnf.networks.conditioners.vgg import resolve_level_channels

__all__ = ["RRDB", "RRDBConditioner", "ResidualDenseBlock"]


def _scale_init_(module: nn.Module, scale: float) -> None:
    """ESRGAN's initialisation: Kaiming-normal convs scaled by ``scale`` (0.1 keeps deep residual trunks stable)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, a=0.0, mode="fan_in")
            m.weight.data.mul_(scale)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class ResidualDenseBlock(nn.Module):
    r"""Five densely connected 3x3 convolutions with growth ``growth_channels`` and residual scaling 0.2.

    .. math:: x_k = \mathrm{LReLU}(\mathrm{conv}_k([x, x_1, \dots, x_{k-1}])),\quad
              \mathrm{out} = x + 0.2 \cdot \mathrm{conv}_5([x, x_1, \dots, x_4])

    Args:
        spatial_dims: 2 or 3.
        channels: input/output channels (``nf`` in ESRGAN).
        growth_channels: channels added by each dense conv (``gc``). Defaults to 32.
        residual_scale: scaling of the residual branch. Defaults to 0.2.
    """

    def __init__(self, spatial_dims: int, channels: int, growth_channels: int = 32, residual_scale: float = 0.2):
        super().__init__()
        conv = get_conv_type(spatial_dims)
        self.convs = nn.ModuleList(
            [conv(channels + k * growth_channels, growth_channels, 3, padding=1) for k in range(4)]
            + [conv(channels + 4 * growth_channels, channels, 3, padding=1)]
        )
        self.act = nn.LeakyReLU(0.2, inplace=True)
        self.residual_scale = float(residual_scale)
        _scale_init_(self, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in self.convs[:-1]:
            feats.append(self.act(conv(torch.cat(feats, dim=1))))
        return x + self.residual_scale * self.convs[-1](torch.cat(feats, dim=1))


class RRDB(nn.Module):
    """Residual-in-residual dense block: three :class:`ResidualDenseBlock` and an outer residual scaled by 0.2.

    Args:
        spatial_dims: 2 or 3.
        channels: input/output channels.
        growth_channels: dense growth ``gc``. Defaults to 32.
        residual_scale: outer residual scaling. Defaults to 0.2.
    """

    def __init__(self, spatial_dims: int, channels: int, growth_channels: int = 32, residual_scale: float = 0.2):
        super().__init__()
        self.blocks = nn.Sequential(
            *[ResidualDenseBlock(spatial_dims, channels, growth_channels, residual_scale) for _ in range(3)]
        )
        self.residual_scale = float(residual_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.residual_scale * self.blocks(x)


class RRDBConditioner(nn.Module):
    r"""RRDB trunk on the (low-resolution) conditioning image, returning one feature map per flow level.

    ``h = conv_first(x);  t = h + conv_body(RRDB^{num_blocks}(h))`` at the input's resolution (ESRGAN's trunk
    without its upsampling/reconstruction head). The target (HR image) is ``scale`` times larger than ``x``, and
    flow level ``l + 1`` works at the target's size / ``2**(l + 1)``, i.e. ``x``'s size times
    ``f_l = scale / 2**(l + 1)``. Level maps are made lean, each from the previous one:

    * level 1: ``t`` itself when ``f_0 = 1`` (2x SR), else ``log2 f_0`` x [nearest 2x upsample, conv 3x3, LReLU]
      or ``log2(1/f_0)`` x [conv 3x3 stride 2, LReLU];
    * level ``l > 1``: [conv 3x3 stride 2, LReLU] on level ``l - 1``'s map.

    So every convolution feeds a returned map. The paper's SR models use 16 blocks with ``growth_channels`` 32
    (CNF) or 55 (factored baseline).

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the conditioning image.
        num_levels: number of flow levels L.
        num_blocks: number of RRDBs in the trunk. Defaults to 16.
        growth_channels: dense growth ``gc``. Defaults to 32.
        feature_channels: trunk width (``feature_channels[0]``) and channels per level; an int for all levels.
            Defaults to 64.
        scale: target size / input size (a power of two; 1 for same-size tasks). Defaults to 2.

    Shapes:
        input ``(B, in_channels, *spatial)``; output ``[(B, out_channels[l], *(spatial * scale / 2**(l + 1)))]``.

    Example:
        >>> net = RRDBConditioner(spatial_dims=2, in_channels=3, num_levels=2, num_blocks=1, growth_channels=8,
        ...                       feature_channels=16, scale=2)
        >>> [tuple(h.shape) for h in net(torch.zeros(1, 3, 8, 8))]
        [(1, 16, 8, 8), (1, 16, 4, 4)]
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_levels: int,
        num_blocks: int = 16,
        growth_channels: int = 32,
        feature_channels: int | Sequence[int] = 64,
        scale: int = 2,
    ) -> None:
        super().__init__()
        conv = get_conv_type(spatial_dims)
        self.spatial_dims = int(spatial_dims)
        if int(in_channels) < 1:
            raise ValueError(f"`in_channels` must be >= 1, got {in_channels}.")
        if int(num_blocks) < 0 or int(growth_channels) < 1:
            raise ValueError(
                f"`num_blocks` must be >= 0 and `growth_channels` >= 1, got {num_blocks} and {growth_channels}."
            )
        if int(scale) < 1 or (int(scale) & (int(scale) - 1)) != 0 or int(scale) != scale:
            raise ValueError(f"`scale` must be a power of two (1, 2, 4, ...), got {scale}.")
        self.in_channels = int(in_channels)
        self.num_levels = int(num_levels)
        self.scale = int(scale)
        self.out_channels: list[int] = resolve_level_channels(feature_channels, self.num_levels)
        nf = self.out_channels[0]
        self.conv_first = conv(self.in_channels, nf, 3, padding=1)
        self.body = nn.Sequential(*[RRDB(self.spatial_dims, nf, int(growth_channels)) for _ in range(num_blocks)])
        # An empty trunk is the identity, so conv_body would be a plain extra conv: skip it.
        self.conv_body = conv(nf, nf, 3, padding=1) if num_blocks > 0 else None

        # Level 1 resampling: 2**k with k = log2(scale) - 1 (k > 0: upsample, k < 0: downsample).
        k = round(math.log2(self.scale)) - 1
        first: list[nn.Module] = []
        for _ in range(max(k, 0)):
            first += [nn.Upsample(scale_factor=2, mode="nearest"), conv(nf, nf, 3, padding=1)]
            first += [nn.LeakyReLU(0.2, inplace=True)]
        for _ in range(max(-k, 0)):
            first += [conv(nf, nf, 3, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        self.to_levels = nn.ModuleList([nn.Sequential(*first)])
        for level in range(1, self.num_levels):
            self.to_levels.append(
                nn.Sequential(
                    conv(self.out_channels[level - 1], self.out_channels[level], 3, stride=2, padding=1),
                    nn.LeakyReLU(0.2, inplace=True),
                )
            )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return ``[h_1, ..., h_L]``, ``h_l`` at ``x``'s size times ``scale / 2**l``."""
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"`x` must have shape (B, {self.in_channels}, *spatial) with {self.spatial_dims} spatial dims, "
                f"got {tuple(x.shape)}."
            )
        h = self.conv_first(x)
        if self.conv_body is not None:
            h = h + self.conv_body(self.body(h))
        feats: list[torch.Tensor] = []
        for to_level in self.to_levels:
            h = to_level(h)
            feats.append(h)
        return feats
