"""Calibration metrics (beyond the paper): reliability bins / ECE of a soft map, GED and Hungarian-matched IoU.

- Reliability bins and ECE score the **positive-class probability** (e.g. the mean of N binary samples, i.e. the
  predicted vessel probability per pixel) against the binary reference, pooled over pixels (inside a mask).
- The generalized energy distance (GED) and the Hungarian-matched IoU (HM-IoU) compare a *set* of binary samples
  with a *set* of annotators of the same image (DRIVE test has two), using IoU on the pixels inside the mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from monai_cnf.metrics._validation import as_binary, pool_masked

__all__ = [
    "ReliabilityBins",
    "expected_calibration_error",
    "generalized_energy_distance",
    "hungarian_matched_iou",
    "pairwise_iou",
    "reliability_bins",
    "sample_set_metrics",
]


@dataclass
class ReliabilityBins:
    """Sufficient statistics of a reliability diagram with ``M`` equal-width bins on [0, 1].

    Bin ``i`` holds the pixels with probability in ``[i/M, (i+1)/M)`` (the last bin also holds 1.0). Two
    instances from different images add up (``a + b``), so a data set can be accumulated image by image.

    Attributes:
        edges: bin edges ``(M + 1,)``.
        counts: pixels per bin ``(M,)``.
        prob_sum: sum of predicted probabilities per bin ``(M,)``.
        positive_sum: number of positive reference pixels per bin ``(M,)``.
    """

    edges: np.ndarray
    counts: np.ndarray
    prob_sum: np.ndarray
    positive_sum: np.ndarray

    @property
    def confidence(self) -> np.ndarray:
        """Mean predicted probability per bin ``(M,)``; NaN for empty bins."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.counts > 0, self.prob_sum / self.counts, np.nan)

    @property
    def accuracy(self) -> np.ndarray:
        """Observed frequency of the positive class per bin ``(M,)``; NaN for empty bins."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.counts > 0, self.positive_sum / self.counts, np.nan)

    @property
    def ece(self) -> float:
        r""":math:`\mathrm{ECE} = \sum_i \frac{n_i}{N} |\bar y_i - \bar p_i|` over non-empty bins; in [0, 1]."""
        n = self.counts.sum()
        if n == 0:
            raise ValueError("no pixel was counted; the ECE is undefined (empty `mask`?).")
        nonempty = self.counts > 0
        gap = np.abs(self.positive_sum[nonempty] - self.prob_sum[nonempty])  # n_i * |acc_i - conf_i|
        return float(gap.sum() / n)

    def __add__(self, other: ReliabilityBins) -> ReliabilityBins:
        if not np.array_equal(self.edges, other.edges):
            raise ValueError("`other` has different bin edges; use the same `num_bins` for every image.")
        return ReliabilityBins(
            self.edges,
            self.counts + other.counts,
            self.prob_sum + other.prob_sum,
            self.positive_sum + other.positive_sum,
        )


def reliability_bins(prob: Any, label: Any, mask: Any | None = None, num_bins: int = 10) -> ReliabilityBins:
    """Reliability-diagram statistics of positive-class probabilities against binary labels.

    Args:
        prob: probabilities in [0, 1] (e.g. the mean-of-samples map): one array, a stacked array ``(N, ...)`` or a
            list of per-image arrays; pixels are pooled.
        label: binary reference matching ``prob``.
        mask: binary mask matching ``prob`` or None (all pixels). Defaults to None.
        num_bins: number of equal-width bins M. A probability ``p`` goes to bin ``floor(p·M)`` with ``p·M`` rounded
            to 9 decimals first, so exact edge values such as k/S (means of S samples) land in the upper bin as
            intended despite floating point; ``p = 1`` goes to the last bin. Defaults to 10.

    Returns:
        :class:`ReliabilityBins`.

    Example:
        >>> b = reliability_bins(np.array([0.05, 0.05, 0.95, 0.95]), np.array([0, 1, 1, 1]), num_bins=2)
        >>> b.counts.tolist(), b.confidence.tolist(), b.accuracy.tolist(), round(b.ece, 4)
        ([2, 2], [0.05, 0.95], [0.5, 1.0], 0.25)
    """
    if int(num_bins) < 1:
        raise ValueError(f"`num_bins` must be >= 1, got {num_bins}.")
    m = int(num_bins)
    scores, targets = pool_masked(prob, label, mask, prob_name="prob")
    idx = np.clip(np.floor(np.round(scores * m, 9)).astype(np.int64), 0, m - 1)
    counts = np.bincount(idx, minlength=m)
    prob_sum = np.bincount(idx, weights=scores, minlength=m)
    positive_sum = np.bincount(idx, weights=targets.astype(np.float64), minlength=m)
    return ReliabilityBins(np.linspace(0.0, 1.0, m + 1), counts, prob_sum, positive_sum)


def expected_calibration_error(prob: Any, label: Any, mask: Any | None = None, num_bins: int = 10) -> float:
    r"""Expected calibration error of positive-class probabilities, pooled over pixels inside the mask.

    .. math:: \mathrm{ECE} = \sum_{i=1}^{M} \frac{n_i}{N}\, \left| \frac{1}{n_i}\sum_{j \in B_i} y_j
              - \frac{1}{n_i}\sum_{j \in B_i} p_j \right|

    with the bins :math:`B_i` of :func:`reliability_bins`. 0 is perfect calibration; the value lies in [0, 1].

    Args:
        prob: probabilities in [0, 1], as in :func:`reliability_bins`.
        label: binary reference.
        mask: binary mask or None. Defaults to None.
        num_bins: number of equal-width bins. Defaults to 10.

    Returns:
        the ECE as a float.

    Example:
        >>> expected_calibration_error(np.array([0.05, 0.05, 0.95, 0.95]), np.array([0, 1, 1, 1]), num_bins=2)
        0.25
    """
    return reliability_bins(prob, label, mask, num_bins).ece


def _flatten_set(x: Any, name: str, mask: np.ndarray | None, spatial: tuple[int, ...] | None) -> np.ndarray:
    arr = as_binary(x, name)
    if arr.ndim < 2:
        raise ValueError(f"`{name}` must be a set of binary maps (N, *spatial), got shape {arr.shape}.")
    if spatial is not None and arr.shape[1:] != spatial:
        raise ValueError(f"`{name}` maps {arr.shape[1:]} and the other set's maps {spatial} differ in shape.")
    if mask is not None:
        if mask.shape != arr.shape[1:]:
            raise ValueError(f"`mask` {mask.shape} must match the spatial shape {arr.shape[1:]} of `{name}`.")
        # compress keeps the result C-contiguous (arr[:, mask] is Fortran-ordered: 100x slower to pack)
        return np.compress(mask.ravel(), arr.reshape(arr.shape[0], -1), axis=1)
    return np.ascontiguousarray(arr.reshape(arr.shape[0], -1))


def _flat_pair(a: Any, b: Any, mask: Any | None, name_a: str, name_b: str) -> tuple[np.ndarray, np.ndarray]:
    m = None if mask is None else as_binary(mask, "mask")
    fa_full = as_binary(a, name_a)
    fa = _flatten_set(fa_full, name_a, m, None)
    fb = _flatten_set(as_binary(b, name_b), name_b, m, fa_full.shape[1:])
    return fa, fb


def _prepare(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A bool matrix ``(N, P)`` as ``(representation, counts)`` for fast pairwise intersections.

    With numpy >= 2 the rows are packed into 64-bit words and intersections are popcounts (~10x faster than a
    float matmul on DRIVE-sized maps); otherwise a float matrix for a BLAS matmul (exact counts: float32 below
    2**24 pixels, float64 beyond).
    """
    counts = np.count_nonzero(f, axis=1).astype(np.float64)
    if hasattr(np, "bitwise_count"):
        packed = np.packbits(f, axis=1)
        pad = (-packed.shape[1]) % 8
        return np.ascontiguousarray(np.pad(packed, ((0, 0), (0, pad)))).view(np.uint64), counts
    return f.astype(np.float32 if f.shape[1] < 2**24 else np.float64), counts


def _iou_prepared(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    (ra, ca), (rb, cb) = a, b
    if ra.dtype == np.uint64:
        inter = np.empty((ra.shape[0], rb.shape[0]), dtype=np.float64)
        for i in range(ra.shape[0]):
            inter[i] = np.bitwise_count(ra[i] & rb).sum(axis=1)
    else:
        inter = (ra @ rb.T).astype(np.float64)
    union = ca[:, None] + cb[None, :] - inter
    return np.divide(inter, union, out=np.ones_like(inter), where=union > 0)


def _iou_matrix(fa: np.ndarray, fb: np.ndarray) -> np.ndarray:
    return _iou_prepared(_prepare(fa), _prepare(fb))


def pairwise_iou(a: Any, b: Any, mask: Any | None = None) -> np.ndarray:
    """IoU between every map of set ``a`` and every map of set ``b``, inside an optional mask.

    :math:`\\mathrm{IoU}(u, v) = |u \\cap v| / |u \\cup v|`, with :math:`\\mathrm{IoU} = 1` when both maps are
    empty (two empty segmentations agree perfectly, so :math:`d = 1 - \\mathrm{IoU} = 0`).

    Args:
        a: binary maps ``(N, *spatial)``.
        b: binary maps ``(K, *spatial)``.
        mask: binary mask ``(*spatial)`` or None. Defaults to None.

    Returns:
        IoU matrix ``(N, K)`` in [0, 1].

    Example:
        >>> pairwise_iou(np.array([[1, 1, 0], [0, 0, 0]]), np.array([[1, 0, 0], [0, 0, 0]])).tolist()
        [[0.5, 0.0], [0.0, 1.0]]
    """
    return _iou_matrix(*_flat_pair(a, b, mask, "a", "b"))


def generalized_energy_distance(samples: Any, annotations: Any, mask: Any | None = None) -> float:
    r"""Squared generalized energy distance between a sample set and an annotator set, with d = 1 − IoU.

    .. math::

        D^2_{\mathrm{GED}} = \frac{2}{SA}\sum_{s,a} d(\hat y_s, y_a) - \frac{1}{S^2}\sum_{s,s'} d(\hat y_s, \hat y_{s'})
                             - \frac{1}{A^2}\sum_{a,a'} d(y_a, y_{a'}),

    the plug-in (V-statistic) estimate over all ordered pairs, identical indices included (they contribute 0), i.e.
    the energy distance between the two empirical distributions (Kohl et al., 2018). :math:`d = 1 - \mathrm{IoU}`
    with IoU of two empty maps = 1 (see :func:`pairwise_iou`). Since ``1 − IoU`` is a metric, the value is
    ``>= 0`` and at most 2; lower is better.

    Args:
        samples: binary samples ``(S, *spatial)``.
        annotations: binary annotator maps ``(A, *spatial)``.
        mask: binary mask ``(*spatial)`` or None. Defaults to None.

    Returns:
        :math:`D^2_{\mathrm{GED}}` as a float.

    Example:
        >>> generalized_energy_distance(np.array([[1, 0], [0, 1]]), np.array([[1, 0]]))  # 2*(0+1)/2 - 2/4 - 0
        0.5
    """
    return sample_set_metrics(samples, annotations, mask)[0]


def hungarian_matched_iou(samples: Any, annotations: Any, mask: Any | None = None) -> float:
    """Hungarian-matched IoU between a sample set and an annotator set (higher is better, in [0, 1]).

    Both sets are repeated to a common count ``N = lcm(S, A)`` (sample ``i`` appears ``N/S`` times, annotator ``j``
    ``N/A`` times), the one-to-one matching that maximises the total IoU is found with
    :func:`scipy.optimize.linear_sum_assignment`, and the mean IoU of the ``N`` matched pairs is returned. With 2
    annotators and S samples each annotator is matched to half of the samples. IoU of two empty maps is 1.

    Args:
        samples: binary samples ``(S, *spatial)``.
        annotations: binary annotator maps ``(A, *spatial)``.
        mask: binary mask ``(*spatial)`` or None. Defaults to None.

    Returns:
        the mean matched IoU.

    Example:
        >>> hungarian_matched_iou(np.array([[1, 1, 0], [0, 0, 1]]), np.array([[0, 0, 1], [1, 0, 0]]))  # (1 + .5)/2
        0.75
    """
    return sample_set_metrics(samples, annotations, mask)[1]


def _ged(iou_sa: np.ndarray, iou_ss: np.ndarray, iou_aa: np.ndarray) -> float:
    return float(max(0.0, 2.0 * (1.0 - iou_sa).mean() - (1.0 - iou_ss).mean() - (1.0 - iou_aa).mean()))


def _hm_iou(iou: np.ndarray) -> float:
    s, a = iou.shape
    n = s * a // math.gcd(s, a)
    tiled = np.tile(iou, (n // s, n // a))  # rows: samples repeated, cols: annotators repeated
    rows, cols = linear_sum_assignment(tiled, maximize=True)
    return float(tiled[rows, cols].mean())


def sample_set_metrics(samples: Any, annotations: Any, mask: Any | None = None) -> tuple[float, float]:
    """:func:`generalized_energy_distance` and :func:`hungarian_matched_iou` in one pass (the maps are flattened and
    packed once; use it when both are needed, e.g. per image in a calibration analysis).

    Args:
        samples: binary samples ``(S, *spatial)``.
        annotations: binary annotator maps ``(A, *spatial)``.
        mask: binary mask ``(*spatial)`` or None. Defaults to None.

    Returns:
        ``(ged, hm_iou)``.

    Example:
        >>> sample_set_metrics(np.array([[1, 0], [0, 1]]), np.array([[1, 0]]))
        (0.5, 0.5)
    """
    fs, fa = _flat_pair(samples, annotations, mask, "samples", "annotations")
    ps, pa = _prepare(fs), _prepare(fa)
    iou_sa = _iou_prepared(ps, pa)
    return _ged(iou_sa, _iou_prepared(ps, ps), _iou_prepared(pa, pa)), _hm_iou(iou_sa)
