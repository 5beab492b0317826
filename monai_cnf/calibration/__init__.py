"""Calibration analysis: CNF vs factored model on the same images, as numbers and PNG plots.

Library API (the ``cnf calibrate`` command wires it to bundles, MLflow and Rich):

>>> from monai_cnf.calibration import SegmentationCase, analyse_segmentation, bernoulli_samples
>>> # per image: case = SegmentationCase(image, [obs1, obs2], {"cnf": cnf_samples,
>>> #     "factored": bernoulli_samples(soft_map, 100)}, mask=fov, prob_maps={"factored": soft_map})
>>> # report = analyse_segmentation(cases_generator, "out/")  -> report.metrics (dict), report.plots (PNG paths)

- :func:`analyse_segmentation`: PR curves with max F (Fig. 6 left), PR-space scatter of samples with the 2nd
  observer (Fig. 6 right), reliability diagram + ECE, GED and HM-IoU against all observers, sample grids (Fig. 4).
- :func:`analyse_super_resolution`: PSNR/SSIM on Y per temperature and temperature-sweep grids (Figs. 3, 7-9).
- :mod:`monai_cnf.calibration.plots`: the individual figures, usable on their own.
"""

from __future__ import annotations

from monai_cnf.calibration.analysis import CalibrationReport, analyse_segmentation, analyse_super_resolution
from monai_cnf.calibration.cases import SegmentationCase, SuperResolutionCase, bernoulli_samples
from monai_cnf.calibration.plots import (
    plot_pr_curves,
    plot_pr_scatter,
    plot_reliability,
    plot_sample_grid,
    plot_temperature_sweep,
)

__all__ = [
    "CalibrationReport",
    "SegmentationCase",
    "SuperResolutionCase",
    "analyse_segmentation",
    "analyse_super_resolution",
    "bernoulli_samples",
    "plot_pr_curves",
    "plot_pr_scatter",
    "plot_reliability",
    "plot_sample_grid",
    "plot_temperature_sweep",
]
