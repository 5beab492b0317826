"""Numbers people compare, each defined once with its exact definition in the docstring.

- :mod:`~monai_cnf.metrics.likelihood`: :func:`bits_per_dim`, :func:`real_dims`.
- :mod:`~monai_cnf.metrics.segmentation`: pooled :func:`pr_curve`, :func:`max_f_score`,
  :func:`sample_precision_recall`, :func:`binary_precision_recall` (DRIVE, inside the FOV).
- :mod:`~monai_cnf.metrics.calibration`: :func:`reliability_bins`, :func:`expected_calibration_error`,
  :func:`generalized_energy_distance`, :func:`hungarian_matched_iou`, :func:`sample_set_metrics`,
  :func:`pairwise_iou`.
- :mod:`~monai_cnf.metrics.image`: :func:`psnr_y`, :func:`ssim_y`, :func:`psnr_rgb`, :func:`ssim_rgb`,
  :func:`rgb_to_y` (SR, border crop = scale).

Inputs may be numpy arrays or torch tensors; bad inputs raise ``ValueError`` naming the argument.
"""

from __future__ import annotations

from monai_cnf.metrics.calibration import (
    ReliabilityBins,
    expected_calibration_error,
    generalized_energy_distance,
    hungarian_matched_iou,
    pairwise_iou,
    reliability_bins,
    sample_set_metrics,
)
from monai_cnf.metrics.image import psnr_rgb, psnr_y, rgb_to_y, ssim_rgb, ssim_y
from monai_cnf.metrics.likelihood import bits_per_dim, real_dims
from monai_cnf.metrics.segmentation import (
    MaxFScore,
    binary_precision_recall,
    max_f_score,
    pr_curve,
    sample_precision_recall,
)

__all__ = [
    "MaxFScore",
    "ReliabilityBins",
    "binary_precision_recall",
    "bits_per_dim",
    "expected_calibration_error",
    "generalized_energy_distance",
    "hungarian_matched_iou",
    "max_f_score",
    "pairwise_iou",
    "pr_curve",
    "psnr_rgb",
    "psnr_y",
    "real_dims",
    "reliability_bins",
    "rgb_to_y",
    "sample_precision_recall",
    "sample_set_metrics",
    "ssim_rgb",
    "ssim_y",
]
