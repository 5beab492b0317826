"""Segmentation metrics of the paper (DRIVE): pooled PR curve, max F-score, per-sample PR points.

Definitions (all computed inside the mask, e.g. DRIVE's field-of-view, and pooled over images, i.e. every pixel
of every image counts once; images are *not* averaged):

- precision :math:`P = TP / (TP + FP)`, recall :math:`R = TP / (TP + FN)`, F-score :math:`F = 2PR / (P + R)`.
- PR curve: scikit-learn's :func:`sklearn.metrics.precision_recall_curve` on the pooled pixels; a pixel is
  predicted positive when its probability is ``>= threshold``.
- max F: the largest F over the curve's thresholds.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from sklearn.metrics import precision_recall_curve

from monai_cnf.metrics._validation import as_binary, pool_masked

__all__ = ["MaxFScore", "binary_precision_recall", "max_f_score", "pr_curve", "sample_precision_recall"]


class MaxFScore(NamedTuple):
    """Result of :func:`max_f_score`: the best F-score, its threshold, and precision / recall there.

    ``float(result)`` is the F-score, so the result can be logged directly as a number.
    """

    f_score: float
    threshold: float
    precision: float
    recall: float

    def __float__(self) -> float:
        return float(self.f_score)


def pr_curve(prob_maps: Any, labels: Any, masks: Any | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision-recall curve of soft predictions, pooled over images inside the masks.

    Args:
        prob_maps: probabilities in [0, 1] (e.g. the mean of N binary samples): one array ``(*spatial)``, a stacked
            array ``(N, *spatial)`` or a list of per-image arrays (sizes may differ). numpy or torch.
        labels: binary reference maps matching ``prob_maps``.
        masks: binary masks (e.g. the FOV) matching ``prob_maps``; ``None`` uses all pixels. Defaults to None.

    Returns:
        ``(precision, recall, thresholds)`` exactly as :func:`sklearn.metrics.precision_recall_curve`: precision
        and recall have one more element than thresholds (the final point P=1, R=0 has no threshold); recall is
        decreasing.

    Raises:
        ValueError: on shape mismatches, non-binary labels/masks, NaNs, probabilities outside [0, 1], or no
            positive pixel inside the masks.

    Example:
        >>> p, r, t = pr_curve(np.array([0.9, 0.6, 0.4, 0.1]), np.array([1, 0, 1, 0]))
        >>> p.tolist(), r.tolist(), t.tolist()
        ([0.5, 0.6666666666666666, 0.5, 1.0, 1.0], [1.0, 1.0, 0.5, 0.5, 0.0], [0.1, 0.4, 0.6, 0.9])
    """
    scores, targets = pool_masked(prob_maps, labels, masks)
    if not targets.any():
        raise ValueError("`labels` has no positive pixel inside `masks`; the PR curve is undefined.")
    precision, recall, thresholds = precision_recall_curve(targets, scores)
    return precision, recall, thresholds


def max_f_score(prob_maps: Any, labels: Any, masks: Any | None = None) -> MaxFScore:
    """Maximum F-score over the thresholds of the pooled PR curve (the paper's DRIVE number).

    :math:`F^* = \\max_t 2 P(t) R(t) / (P(t) + R(t))` over the thresholds of :func:`pr_curve` (points with
    :math:`P + R = 0` count as F = 0). Ties go to the highest threshold.

    Args:
        prob_maps: probabilities, as in :func:`pr_curve`.
        labels: binary reference maps, as in :func:`pr_curve`.
        masks: binary masks or None, as in :func:`pr_curve`. Defaults to None.

    Returns:
        :class:`MaxFScore` ``(f_score, threshold, precision, recall)``.

    Example:
        >>> max_f_score(np.array([0.9, 0.6, 0.4, 0.1]), np.array([1, 0, 1, 0])).f_score  # t=0.4: P=2/3, R=1
        0.8
    """
    precision, recall, thresholds = pr_curve(prob_maps, labels, masks)
    p, r = precision[:-1], recall[:-1]
    denom = p + r
    f = np.divide(2 * p * r, denom, out=np.zeros_like(denom), where=denom > 0)
    i = int(np.flatnonzero(f == f.max())[-1])
    return MaxFScore(float(f[i]), float(thresholds[i]), float(p[i]), float(r[i]))


def binary_precision_recall(prediction: Any, label: Any, mask: Any | None = None) -> tuple[float, float]:
    """Precision and recall of one binary map (e.g. a human grader's) against a reference, inside a mask.

    Conventions for empty sets: precision is 1 when nothing is predicted positive (no false positive was made) and
    recall is 1 when the reference has no positive pixel (nothing was missed); both are then finite.

    Args:
        prediction: binary map ``(*spatial)``.
        label: binary reference map of the same shape.
        mask: binary mask of the same shape or None (all pixels). Defaults to None.

    Returns:
        ``(precision, recall)``.

    Example:
        >>> binary_precision_recall(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0]))
        (0.5, 0.5)
    """
    points = sample_precision_recall(as_binary(prediction, "prediction")[None], label, mask)
    return float(points[0, 0]), float(points[0, 1])


def sample_precision_recall(samples: Any, label: Any, mask: Any | None = None) -> np.ndarray:
    """Per-sample precision and recall of binary samples of one image (the paper's PR-space scatter, Fig. 6 right).

    Each sample is scored on its own: :math:`P_s = TP_s / (TP_s + FP_s)`, :math:`R_s = TP_s / (TP_s + FN_s)` inside
    the mask, with the empty-set conventions of :func:`binary_precision_recall`. For a human grader pass its map
    with a leading axis of 1 (or use :func:`binary_precision_recall`).

    Args:
        samples: binary samples ``(S, *spatial)`` (``(S, 1, H, W)`` works when ``label`` is ``(1, H, W)``).
        label: binary reference ``(*spatial)``.
        mask: binary mask ``(*spatial)`` or None. Defaults to None.

    Returns:
        array ``(S, 2)`` of ``(precision, recall)`` per sample.

    Example:
        >>> sample_precision_recall(np.array([[1, 1, 0], [0, 0, 0]]), np.array([1, 0, 1])).tolist()
        [[0.5, 0.5], [1.0, 0.0]]
    """
    s = as_binary(samples, "samples")
    y = as_binary(label, "label")
    if s.shape[1:] != y.shape:
        raise ValueError(
            f"`samples` {s.shape} must be (S, *label.shape) with `label` {y.shape}; stack the samples of one image."
        )
    if mask is not None:
        m = as_binary(mask, "mask")
        if m.shape != y.shape:
            raise ValueError(f"`mask` {m.shape} and `label` {y.shape} must have the same shape.")
        s = np.compress(m.ravel(), s.reshape(s.shape[0], -1), axis=1)  # C-contiguous, unlike s[:, m]
        y = y[m]
    s = s.reshape(s.shape[0], -1)
    y = y.reshape(-1)
    tp = np.count_nonzero(s & y, axis=1).astype(np.float64)
    pred_pos = np.count_nonzero(s, axis=1).astype(np.float64)
    pos = float(np.count_nonzero(y))
    precision = np.divide(tp, pred_pos, out=np.ones_like(tp), where=pred_pos > 0)
    recall = tp / pos if pos > 0 else np.ones_like(tp)
    return np.stack([precision, recall], axis=1)
