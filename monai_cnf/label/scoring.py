"""Active-learning scores from the disagreement between CNF samples (no MONAI Label needed).

A conditional normalizing flow gives N samples ``y_1..y_N ~ p(y | x)`` of a binary vessel map. Where the samples
agree the model is sure; where they disagree, the image is worth annotating. Two per-image scores are provided,
both averaged over the pixels of a region (the field of view, FOV):

- ``"entropy"``: the mean per-pixel binary entropy of the sample mean ``p = (1/N) sum_i y_i``,
  ``H(p) = -p log p - (1 - p) log(1 - p)`` (nats; 0 where all samples agree, ``log 2`` where they split evenly).
- ``"variance"``: the mean per-pixel sample variance ``(1/N) sum_i (y_i - p)^2`` (``p (1 - p)`` for binary samples;
  0 where all samples agree, 1/4 at an even split). Works for non-binary samples too.

Images are ranked by decreasing score (the most uncertain first). Only torch is imported here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

__all__ = [
    "UNCERTAINTY_METHODS",
    "binary_entropy",
    "fov_mask",
    "rank_by_score",
    "sample_disagreement",
    "uncertainty_score",
]

#: the per-image uncertainty scores this module computes
UNCERTAINTY_METHODS = ("entropy", "variance")


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """Element-wise binary entropy ``H(p) = -p log p - (1 - p) log(1 - p)`` in nats, with ``0 log 0 = 0``.

    Args:
        p: probabilities in [0, 1], any shape.

    Returns:
        a floating tensor of ``p``'s shape in ``[0, log 2]`` (exactly 0 at ``p`` = 0 and 1).

    Example:
        >>> binary_entropy(torch.tensor([0.0, 0.5, 1.0]))
        tensor([0.0000, 0.6931, 0.0000])
    """
    p = p if p.is_floating_point() else p.float()
    q = 1 - p
    return 0.0 - (torch.special.xlogy(p, p) + torch.special.xlogy(q, q))  # 0 - 0 = +0, not -0


def fov_mask(image: torch.Tensor, threshold: float = 0.1, channel: int = 0) -> torch.Tensor:
    """Estimate a fundus image's field of view (FOV): the pixels whose ``channel`` exceeds ``threshold``.

    Outside DRIVE's circular FOV the red channel is near black; ``red > 0.1`` reproduces DRIVE's own FOV masks on
    99.0-99.9 % of the pixels of its images (measured on 5 of them). Used when an image comes without a mask.

    Args:
        image: ``(B, C, *spatial)`` intensities in [0, 1].
        threshold: intensity above which a pixel is inside the FOV. Defaults to 0.1.
        channel: the channel to threshold (0 = red for RGB). Defaults to 0.

    Returns:
        a bool tensor ``(B, 1, *spatial)``.

    Example:
        >>> fov_mask(torch.tensor([[[[0.0, 0.5]]]])).tolist()
        [[[[False, True]]]]
    """
    if image.dim() < 3:
        raise ValueError(f"image must be (B, C, *spatial), got shape {tuple(image.shape)}.")
    if not 0 <= channel < image.shape[1]:
        raise ValueError(f"channel must be in [0, {image.shape[1] - 1}] for {image.shape[1]} channels, got {channel}.")
    return image[:, channel : channel + 1] > threshold


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Per-item mean of ``values`` ``(B, C, *spatial)`` over ``mask`` (broadcast over channels); shape ``(B,)``."""
    flat = values.reshape(values.shape[0], -1).to(torch.float64)
    if mask is None:
        return flat.mean(1)
    if mask.shape[0] != values.shape[0] or mask.shape[2:] != values.shape[2:]:
        raise ValueError(
            f"mask must be (B, 1 or C, *spatial) matching values {tuple(values.shape)}, got {tuple(mask.shape)}."
        )
    w = (mask != 0).expand_as(values).reshape(values.shape[0], -1).to(torch.float64)
    count = w.sum(1)
    if bool((count == 0).any()):
        raise ValueError("mask is empty for at least one image: pass a mask with at least one pixel, or mask=None.")
    return (flat * w).sum(1) / count


def uncertainty_score(
    mean: torch.Tensor,
    mask: torch.Tensor | None = None,
    method: str = "entropy",
    std: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-image uncertainty from the per-pixel sample mean (and optionally std) of binary CNF samples.

    ``"entropy"``: ``mean_{pixels in mask} H(p)`` with ``p`` the sample mean. ``"variance"``:
    ``mean_{pixels in mask} std^2``, with ``std^2 = p (1 - p)`` when ``std`` is not given (exact for binary samples).

    Args:
        mean: ``(B, C, *spatial)`` per-pixel mean of the samples, in [0, 1].
        mask: optional ``(B, 1 or C, *spatial)`` region to average over (e.g. the FOV); None uses every pixel.
            Defaults to None.
        method: ``"entropy"`` or ``"variance"``. Defaults to "entropy".
        std: optional ``(B, C, *spatial)`` per-pixel sample standard deviation (``SampleInferer(return_std=True)``)
            for ``"variance"``. Defaults to None.

    Returns:
        ``(B,)`` float64 scores; higher means more disagreement.

    Example:
        >>> mean = torch.stack([torch.full((1, 2, 2), 0.5), torch.ones(1, 2, 2)])
        >>> uncertainty_score(mean, method="variance").tolist()
        [0.25, 0.0]
    """
    if method not in UNCERTAINTY_METHODS:
        raise ValueError(f"method must be one of {UNCERTAINTY_METHODS}, got {method!r}.")
    if mean.dim() < 3:
        raise ValueError(f"mean must be (B, C, *spatial), got shape {tuple(mean.shape)}.")
    if method == "entropy":
        per_pixel = binary_entropy(mean.clamp(0.0, 1.0))
    elif std is not None:
        if std.shape != mean.shape:
            raise ValueError(f"std must have mean's shape {tuple(mean.shape)}, got {tuple(std.shape)}.")
        per_pixel = std.to(torch.float64) ** 2
    else:
        p = mean.to(torch.float64).clamp(0.0, 1.0)
        per_pixel = p * (1 - p)
    return _masked_mean(per_pixel, mask)


def sample_disagreement(
    samples: torch.Tensor, mask: torch.Tensor | None = None, method: str = "entropy"
) -> torch.Tensor:
    """Per-image uncertainty from the samples themselves, ``(S, B, C, *spatial)`` as ``network.sample`` returns.

    ``"entropy"`` scores the binary entropy of the sample mean; ``"variance"`` the (biased, ``1/S``) sample
    variance, which for binary samples equals ``p (1 - p)``.

    Args:
        samples: ``(S, B, C, *spatial)`` samples (binary for ``"entropy"``), ``S >= 1``.
        mask: optional ``(B, 1 or C, *spatial)`` region to average over. Defaults to None.
        method: ``"entropy"`` or ``"variance"``. Defaults to "entropy".

    Returns:
        ``(B,)`` float64 scores.

    Example:
        >>> agree = torch.ones(4, 1, 1, 3, 3)
        >>> split = torch.stack([torch.ones(1, 1, 3, 3), torch.zeros(1, 1, 3, 3)] * 2)
        >>> sample_disagreement(torch.cat([agree, split], 1)).tolist()  # doctest: +ELLIPSIS
        [0.0, 0.693...]
    """
    if samples.dim() < 4:
        raise ValueError(f"samples must be (S, B, C, *spatial), got shape {tuple(samples.shape)}.")
    s64 = samples.to(torch.float64)
    mean = s64.mean(0)
    std = s64.var(0, unbiased=False).sqrt() if method == "variance" else None
    return uncertainty_score(mean, mask=mask, method=method, std=std)


def rank_by_score(scores: Mapping[str, float]) -> list[str]:
    """Image ids sorted by decreasing score (most uncertain first); ties and NaNs keep a stable id order.

    Args:
        scores: image id -> score.

    Returns:
        the ids, NaN scores last.

    Example:
        >>> rank_by_score({"a": 0.1, "b": 0.3, "c": 0.2})
        ['b', 'c', 'a']
    """

    def key(item: tuple[str, float]) -> tuple[bool, float, str]:
        value = float(item[1])
        return (math.isnan(value), -value if not math.isnan(value) else 0.0, item[0])

    return [k for k, _ in sorted(scores.items(), key=key)]
