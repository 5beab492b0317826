"""A wider-context conditioner: MONAI's ``UNet`` at full resolution, then one strided head per flow level.

The paper's VGG conditioner (Table 5) sees about 40 pixels and max-pools after a single full-resolution
convolution. ``DESIGN.md`` measured a small U-Net reaching the paper's DRIVE F-score within minutes; this module
gives the CNF and its factored baseline that conditioner (the same one, so comparisons stay matched).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from monai_cnf.networks.conditioners.subnets import get_conv_type
from monai_cnf.networks.conditioners.vgg import NORMS, resolve_level_channels

__all__ = ["UNetConditioner"]

# MONAI's names for the norms of VGGConditioner's ``norm`` argument (``None``: no normalisation).
_MONAI_NORM: dict[str, tuple[str, dict[str, bool]] | str | None] = {
    "instance": ("instance", {"affine": True}),
    "batch": "batch",
    "none": None,
}


class UNetConditioner(nn.Module):
    r"""U-Net conditioner returning one feature map per flow level, ``conds[l]`` at the input's size / ``2**(l+1)``.

    ``x -> monai.networks.nets.UNet -> u`` (``channels[0]`` feature maps at full resolution, its last layer linear),
    then for level ``l``: ``ReLU -> conv with kernel = stride = 2**(l + 1)`` (a space-to-depth followed by a 1x1
    convolution: every full-resolution feature of the cell reaches the level, unlike max-pooling).
    MONAI's ``UNet`` is reused as is; what it lacks here is the per-level outputs, added by the heads.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        in_channels: channels of the conditioning image ``x``.
        num_levels: number of flow levels L (number of feature maps returned).
        feature_channels: output channels per level (int for all, ``None`` for ``32 * 2**l``). Defaults to None.
        channels: the U-Net's channels per resolution (``len(channels) - 1`` stride-2 downsamplings, at most
            ``num_levels`` so that the model's divisor ``2**num_levels`` suffices). Defaults to ``(16, 32, 64)``.
        num_res_units: residual units per U-Net block (MONAI's ``num_res_units``). Defaults to 2.
        norm: ``"batch"`` (fixed running statistics in ``eval()``: one model at every size), ``"instance"``
            (statistics of each input) or ``"none"``. Defaults to ``"batch"``.

    Shapes:
        input ``(B, in_channels, *spatial)``, every spatial size divisible by ``2**num_levels``;
        output ``[(B, feature_channels[l], *spatial / 2**(l + 1)) for l in range(num_levels)]``.

    Example:
        >>> net = UNetConditioner(spatial_dims=2, in_channels=3, num_levels=2, feature_channels=(32, 64))
        >>> [tuple(h.shape) for h in net(torch.zeros(2, 3, 16, 16))]
        [(2, 32, 8, 8), (2, 64, 4, 4)]
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_levels: int,
        feature_channels: int | Sequence[int] | None = None,
        channels: Sequence[int] = (16, 32, 64),
        num_res_units: int = 2,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        from monai.networks.nets import UNet  # lazy: `import monai` is slow and most importers never build one

        if int(spatial_dims) not in (2, 3):
            raise ValueError(f"`spatial_dims` must be 2 or 3, got {spatial_dims}.")
        if norm not in NORMS:
            raise ValueError(f"`norm` must be one of {NORMS}, got {norm!r}.")
        if int(in_channels) < 1:
            raise ValueError(f"`in_channels` must be >= 1, got {in_channels}.")
        self.spatial_dims, self.in_channels, self.norm = int(spatial_dims), int(in_channels), norm
        self.num_levels = int(num_levels)
        self.out_channels: list[int] = resolve_level_channels(feature_channels, self.num_levels)
        channels = [int(c) for c in channels]
        if len(channels) < 2 or any(c < 1 for c in channels):
            raise ValueError(f"`channels` needs at least two positive entries (one downsampling), got {channels}.")
        if len(channels) - 1 > self.num_levels:
            raise ValueError(
                f"`channels` {channels} gives {len(channels) - 1} downsamplings, more than num_levels="
                f"{self.num_levels}: inputs are only padded to a multiple of 2**num_levels; use at most "
                f"{self.num_levels + 1} channel entries."
            )
        self.unet = UNet(
            spatial_dims=self.spatial_dims,
            in_channels=self.in_channels,
            out_channels=channels[0],
            channels=channels,
            strides=[2] * (len(channels) - 1),
            num_res_units=int(num_res_units),
            norm=_MONAI_NORM[norm],
        )
        conv = get_conv_type(self.spatial_dims)
        self.heads = nn.ModuleList(
            nn.Sequential(
                nn.ReLU(inplace=False),
                conv(channels[0], out, kernel_size=2 ** (level + 1), stride=2 ** (level + 1)),
            )
            for level, out in enumerate(self.out_channels)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return ``[h_1, ..., h_L]``, ``h_l`` at the input's size / ``2**l``."""
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"`x` must have shape (B, {self.in_channels}, *spatial) with {self.spatial_dims} spatial dims, "
                f"got {tuple(x.shape)}."
            )
        k = 2**self.num_levels
        if any(s % k for s in x.shape[2:]):
            raise ValueError(
                f"`x` spatial size {tuple(x.shape[2:])} is not divisible by 2**num_levels = {k}; pad it, e.g. "
                f"monai.transforms.DivisiblePadd(keys=['image'], k={k})."
            )
        u = self.unet(x)
        return [head(u) for head in self.heads]
