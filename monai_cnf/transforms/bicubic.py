r"""MATLAB-style bicubic resizing with antialiasing, for the super-resolution degradation.

MATLAB's ``imresize(img, 1/scale, "bicubic")`` is the de-facto standard for making SR low-resolution
inputs (ESRGAN, SRFlow and the paper use it), and neither torch nor MONAI reproduces it: torch's
``interpolate(mode="bicubic")`` uses a = -0.75 and no antialiasing, and ``antialias=True`` handles the
borders differently. This module derives it from its definition:

.. math::

    \mathrm{cubic}(t) = \begin{cases}
        1.5|t|^3 - 2.5|t|^2 + 1 & |t| \le 1 \\
        -0.5|t|^3 + 2.5|t|^2 - 4|t| + 2 & 1 < |t| \le 2 \\
        0 & \text{otherwise}
    \end{cases}
    \qquad (\text{Keys' cubic with } a = -0.5)

For a downscaling by ``scale`` (output/input ratio ``s = 1 / scale < 1``) with antialiasing the kernel
is stretched, :math:`h(t) = s \cdot \mathrm{cubic}(s t)`, so its support widens from 4 to ``4 / s``
input pixels. Output pixel ``i`` (0-based) sits at input coordinate :math:`x_i = (i + 0.5) / s - 0.5`;
its weights :math:`h(x_i - j)` over the input pixels ``j`` in the support are normalised to sum to one,
and indices beyond the border are mirrored with the edge pixel repeated (MATLAB's ``symmetric``).
The filter is separable: it is applied along every spatial axis in turn, so 2D and 3D share one path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch

__all__ = ["bicubic_resize", "cubic_kernel", "imresize_weights"]


def cubic_kernel(t: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``), evaluated element-wise.

    Args:
        t: distances in pixels.

    Returns:
        the kernel values, same shape as ``t``.

    Example:
        >>> float(cubic_kernel(np.array(0.5)))
        0.5625
    """
    a = np.abs(np.asarray(t, dtype=np.float64))
    a2, a3 = a * a, a * a * a
    inner = 1.5 * a3 - 2.5 * a2 + 1.0
    outer = -0.5 * a3 + 2.5 * a2 - 4.0 * a + 2.0
    return np.where(a <= 1.0, inner, np.where(a <= 2.0, outer, 0.0))


@lru_cache(maxsize=64)
def imresize_weights(
    in_length: int, out_length: int, scale: float, antialias: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and weights of MATLAB ``imresize`` bicubic along one axis.

    Args:
        in_length: input size along the axis.
        out_length: output size along the axis.
        scale: output/input size ratio ``s`` (0.5 for a 2x downscaling).
        antialias: widen the kernel by ``1 / s`` when downscaling (MATLAB's default). Defaults to True.

    Returns:
        ``(indices, weights)``, both of shape ``(out_length, P)``: output pixel ``i`` is
        ``sum_p weights[i, p] * input[indices[i, p]]``; indices are already mirrored into ``[0, in_length)``.

    Example:
        >>> idx, w = imresize_weights(8, 4, 0.5)
        >>> w.shape, round(float(w[1].sum()), 12)
        ((4, 8), 1.0)
    """
    if in_length < 1 or out_length < 1:
        raise ValueError(f"in_length and out_length must be >= 1, got {in_length} and {out_length}.")
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}.")
    widen = antialias and scale < 1.0
    kernel_width = 4.0 / scale if widen else 4.0
    x = (np.arange(out_length, dtype=np.float64) + 0.5) / scale - 0.5  # output centres in input coordinates
    left = np.floor(x - kernel_width / 2.0)
    num_taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + np.arange(num_taps, dtype=np.float64)[None, :]
    dist = x[:, None] - indices
    weights = scale * cubic_kernel(scale * dist) if widen else cubic_kernel(dist)
    weights = weights / weights.sum(axis=1, keepdims=True)
    # mirror out-of-range indices, repeating the edge pixel: ... 1 0 | 0 1 ... n-1 | n-1 n-2 ...
    period = 2 * in_length
    j = np.mod(indices.astype(np.int64), period)
    j = np.where(j >= in_length, period - 1 - j, j)
    # taps whose weight is exactly zero for every output pixel contribute nothing: drop them
    keep = np.any(weights != 0.0, axis=0)
    return j[:, keep], weights[:, keep]


def bicubic_resize(
    img: torch.Tensor, scale: float | Sequence[float], antialias: bool = True, spatial_axes: Sequence[int] | None = None
) -> torch.Tensor:
    """Resize ``img`` like MATLAB's ``imresize(img, scale, "bicubic")`` (output size ``ceil(n * scale)``).

    Args:
        img: a float tensor ``(C, *spatial)``; integer tensors are converted to float32.
        scale: output/input size ratio per spatial axis (0.5 halves every axis); one value for all axes or
            one per spatial axis.
        antialias: widen the kernel when downscaling (MATLAB's default). Defaults to True.
        spatial_axes: the axes to resize. Defaults to every axis but the first (channel-first data).

    Returns:
        the resized tensor, same dtype (float) and device as ``img``; values are not clipped or rounded.

    Example:
        >>> x = torch.arange(16.0).reshape(1, 4, 4)
        >>> bicubic_resize(x, 0.5).shape
        torch.Size([1, 2, 2])
    """
    if not torch.is_floating_point(img):
        img = img.to(torch.float32)
    axes = list(range(1, img.ndim)) if spatial_axes is None else [a % img.ndim for a in spatial_axes]
    scales = [float(scale)] * len(axes) if isinstance(scale, (int, float)) else [float(s) for s in scale]
    if len(scales) != len(axes):
        raise ValueError(f"scale must have one value or one per spatial axis ({len(axes)}), got {scale}.")
    out = img
    # resize the axis with the strongest reduction first, as MATLAB does (ties keep the axis order)
    for ax, s in sorted(zip(axes, scales, strict=True), key=lambda p: p[1]):
        n_in = out.shape[ax]
        n_out = math.ceil(n_in * s - 1e-9)
        if n_out == n_in and s == 1.0:
            continue
        idx, w = imresize_weights(n_in, n_out, s, antialias)
        idx_t = torch.as_tensor(idx, device=out.device)
        w_t = torch.as_tensor(w, device=out.device, dtype=out.dtype)
        moved = out.movedim(ax, -1)  # (..., n_in)
        gathered = moved[..., idx_t]  # (..., n_out, P)
        out = (gathered * w_t).sum(-1).movedim(-1, ax)
    return out
