"""The paper's VGG-like feature extractor (Table 5 / Figure 5) generalised to any number of flow levels."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from monai_cnf.networks.conditioners.subnets import get_conv_type

__all__ = ["NORMS", "VGGConditioner", "resolve_level_channels"]

_INSTANCE_NORM: dict[int, type[nn.Module]] = {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}
_BATCH_NORM: dict[int, type[nn.Module]] = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
#: ``norm`` choices of :class:`VGGConditioner`. Only ``"instance"`` normalises with statistics of the input it is
#: given (so a patch-trained model would be another model on a whole image); ``"batch"`` uses its running
#: statistics at inference (``eval()``), ``"none"`` has no normalisation at all.
NORMS = ("instance", "batch", "none")
_MAX_POOL: dict[int, type[nn.Module]] = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}


def _check_spatial_dims(spatial_dims: int) -> int:
    if int(spatial_dims) not in (2, 3):
        raise ValueError(f"`spatial_dims` must be 2 or 3, got {spatial_dims}.")
    return int(spatial_dims)


def resolve_level_channels(
    feature_channels: int | Sequence[int] | None, num_levels: int, name: str = "feature_channels"
) -> list[int]:
    """Expand ``feature_channels`` to one positive int per level.

    ``None`` gives ``32 * 2**l`` (32, 64, 128, ...); an int is used for every level; a sequence must have
    ``num_levels`` entries.

    Example:
        >>> resolve_level_channels(None, 3)
        [32, 64, 128]
    """
    if int(num_levels) < 1:
        raise ValueError(f"`num_levels` must be >= 1, got {num_levels}.")
    if feature_channels is None:
        channels = [32 * 2**level for level in range(num_levels)]
    elif isinstance(feature_channels, int):
        channels = [int(feature_channels)] * num_levels
    else:
        channels = [int(c) for c in feature_channels]
        if len(channels) != num_levels:
            raise ValueError(
                f"`{name}` has {len(channels)} entries but `num_levels` is {num_levels}; give one channel count "
                "per flow level (or a single int for all levels)."
            )
    if any(c < 1 for c in channels):
        raise ValueError(f"`{name}` must be positive, got {channels}.")
    return channels


def _norm_layer(norm: str, spatial_dims: int, channels: int) -> nn.Module:
    if norm == "instance":
        return _INSTANCE_NORM[spatial_dims](channels, affine=True)
    if norm == "batch":
        return _BATCH_NORM[spatial_dims](channels)
    return nn.Identity()


class _Block(nn.Sequential):
    """The paper's ``block = [InstanceNorm, ReLU, conv 3x3]`` (the norm as chosen by ``norm``)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, norm: str = "instance") -> None:
        super().__init__(
            _norm_layer(norm, spatial_dims, in_channels),
            nn.ReLU(inplace=False),
            get_conv_type(spatial_dims)(in_channels, out_channels, kernel_size=3, padding=1),
        )


class VGGConditioner(nn.Module):
    r"""VGG-like conditioner of the paper's DRIVE model (Table 5), returning one feature map per flow level.

    Layers (for ``num_levels = 2``, exactly the paper's Table 5; "block" is ``[InstanceNorm, ReLU, conv 3x3]``)::

        0 input (res R) -> 1 block (R) -> 2 max-pool (R/2) -> 3 block -> 4 block [out, level 1]
                        -> 5 max-pool (R/4) -> 6 block -> 7 block [out, level 2]

    For other ``num_levels`` every extra level adds ``[max-pool 2x2, block, block]`` and outputs its last block,
    so ``conds[l]`` has the input's size divided by ``2**(l + 1)``, the resolution of flow level ``l + 1``.
    The first block maps ``in_channels -> feature_channels[0]``; level ``l``'s blocks have ``feature_channels[l]``
    output channels. Every convolution feeds an output (nothing computed is discarded).

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        in_channels: channels of the conditioning image ``x``.
        num_levels: number of flow levels L (number of feature maps returned).
        feature_channels: channels per level; an int for all levels, or ``None`` for ``32 * 2**l``.
            Defaults to None (``(32, 64)`` for two levels).
        norm: the blocks' normalisation: ``"instance"`` (the paper's; statistics of each input, so the features
            of a pixel depend on the whole crop it is seen in: train and infer at one image size),
            ``"batch"`` (BatchNorm; fixed running statistics in ``eval()``, so a model trained on patches is
            the same model on a whole image) or ``"none"``. Defaults to ``"instance"``.

    Shapes:
        input ``(B, in_channels, *spatial)`` with every spatial size divisible by ``2**num_levels``;
        output ``[(B, feature_channels[l], *spatial / 2**(l + 1)) for l in range(num_levels)]``.

    Example:
        >>> net = VGGConditioner(spatial_dims=2, in_channels=3, num_levels=2, feature_channels=(32, 64))
        >>> [tuple(h.shape) for h in net(torch.zeros(1, 3, 16, 16))]
        [(1, 32, 8, 8), (1, 64, 4, 4)]
        >>> net.out_channels
        [32, 64]
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_levels: int,
        feature_channels: int | Sequence[int] | None = None,
        norm: str = "instance",
    ) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"`norm` must be one of {NORMS}, got {norm!r}.")
        self.norm = norm
        self.spatial_dims = _check_spatial_dims(spatial_dims)
        if int(in_channels) < 1:
            raise ValueError(f"`in_channels` must be >= 1, got {in_channels}.")
        self.in_channels = int(in_channels)
        self.num_levels = int(num_levels)
        self.out_channels: list[int] = resolve_level_channels(feature_channels, self.num_levels)
        layers: list[nn.Module] = [_Block(self.spatial_dims, self.in_channels, self.out_channels[0], norm)]
        output_indices: list[int] = []
        prev = self.out_channels[0]
        for channels in self.out_channels:
            layers += [
                _MAX_POOL[self.spatial_dims](kernel_size=2, stride=2),
                _Block(self.spatial_dims, prev, channels, norm),
                _Block(self.spatial_dims, channels, channels, norm),
            ]
            output_indices.append(len(layers) - 1)
            prev = channels
        self.layers = nn.ModuleList(layers)
        #: 0-based indices into ``layers`` whose outputs are returned (Table 5's layers 4 and 7 are 3 and 6).
        self.output_indices: tuple[int, ...] = tuple(output_indices)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return ``[h_1, ..., h_L]``, ``h_l`` at the input's size / ``2**l``."""
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"`x` must have shape (B, {self.in_channels}, *spatial) with {self.spatial_dims} spatial dims, "
                f"got {tuple(x.shape)}."
            )
        deepest = [s // 2**self.num_levels for s in x.shape[2:]]
        if self.norm == "instance" and math.prod(deepest) < 2:
            raise ValueError(
                f"`x` of spatial size {tuple(x.shape[2:])} leaves {tuple(deepest)} at the deepest level, where "
                "InstanceNorm needs more than one element; use larger patches (e.g. "
                f"monai.transforms.RandSpatialCropd with roi_size >= {2 ** (self.num_levels + 1)}) or fewer levels."
            )
        feats: list[torch.Tensor] = []
        h = x
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i in self.output_indices:
                feats.append(h)
        return feats
