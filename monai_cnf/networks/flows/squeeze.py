"""Space-to-depth (squeeze) for 2D and 3D tensors."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .base import FlowLayer, check_input

__all__ = ["Squeeze", "squeeze", "unsqueeze"]


def _check_divisible(x: Tensor, factor: int) -> None:
    for axis, size in enumerate(x.shape[2:]):
        if size % factor:
            raise ValueError(
                f"Squeeze needs spatial sizes divisible by {factor}, but spatial axis {axis} has size {size} "
                f"(input shape {tuple(x.shape)}); pad the input, e.g. with monai.transforms.DivisiblePad(k={factor})."
            )


def squeeze(x: Tensor, factor: int = 2) -> Tensor:
    """Space-to-depth ``(B, C, *S) -> (B, C * factor**d, *(S / factor))``.

    The channel order is ``c * factor**d + offset`` with the offset enumerating the block row-major, which is the
    order of ``torch.nn.functional.pixel_unshuffle`` in 2D.

    Args:
        x: input ``(B, C, *spatial)``; every spatial size divisible by ``factor``.
        factor: block size. Defaults to 2.
    """
    _check_divisible(x, factor)
    d = x.ndim - 2
    if d == 2:
        return F.pixel_unshuffle(x, factor)
    b, c, *sizes = x.shape
    shape = [b, c]
    for s in sizes:
        shape += [s // factor, factor]
    x = x.reshape(shape)
    perm = [0, 1, *range(3, 2 + 2 * d, 2), *range(2, 2 + 2 * d, 2)]
    return x.permute(perm).reshape(b, c * factor**d, *(s // factor for s in sizes))


def unsqueeze(z: Tensor, factor: int = 2) -> Tensor:
    """Depth-to-space, the exact inverse of :func:`squeeze`.

    Args:
        z: input ``(B, C * factor**d, *spatial)``.
        factor: block size. Defaults to 2.
    """
    d = z.ndim - 2
    b, cf, *sizes = z.shape
    if cf % factor**d:
        raise ValueError(f"unsqueeze needs channels divisible by {factor**d}, got shape {tuple(z.shape)}.")
    if d == 2:
        return F.pixel_shuffle(z, factor)
    c = cf // factor**d
    z = z.reshape(b, c, *([factor] * d), *sizes)
    perm = [0, 1]
    for i in range(d):
        perm += [2 + d + i, 2 + i]
    return z.permute(perm).reshape(b, c, *(s * factor for s in sizes))


class Squeeze(FlowLayer):
    """Space-to-depth: halves every spatial size and multiplies the channels by ``2**spatial_dims``.

    A permutation of the entries, so :math:`\\log|\\det J| = 0`.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        factor: block size. Defaults to 2.

    >>> import torch
    >>> layer = Squeeze(spatial_dims=3)
    >>> z, logdet = layer(torch.randn(1, 1, 4, 4, 4))
    >>> z.shape, float(logdet[0])
    (torch.Size([1, 8, 2, 2, 2]), 0.0)
    """

    def __init__(self, spatial_dims: int, factor: int = 2) -> None:
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims!r}.")
        if factor < 2:
            raise ValueError(f"factor must be >= 2, got {factor}.")
        self.spatial_dims = spatial_dims
        self.factor = factor

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_input("Squeeze input", x, self.spatial_dims)
        return squeeze(x, self.factor), x.new_zeros(x.shape[0])

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        check_input("Squeeze input", z, self.spatial_dims)
        return unsqueeze(z, self.factor)
