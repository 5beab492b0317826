"""Calibration analysis of binary segmentation models (CNF vs factored) and SR temperature sweeps.

The analysis streams over images: each :class:`~monai_cnf.calibration.SegmentationCase` is scored and dropped
before the next one is read, so only per-image summaries are kept (the masked mean map of each model
for the pooled PR curve, reliability-bin sums, per-sample PR points and per-image GED / HM-IoU). The samples of
one image are held at once (``S × H × W`` booleans, 33 MB for S = 100 on a DRIVE image) because GED and HM-IoU
need every pair of samples. Pass a generator that samples the next image lazily, e.g. wrapped in
``rich.progress.track`` for a progress bar.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from monai_cnf.calibration.cases import SegmentationCase, SuperResolutionCase
from monai_cnf.calibration.plots import (
    plot_pr_curves,
    plot_pr_scatter,
    plot_reliability,
    plot_sample_grid,
    plot_temperature_sweep,
)
from monai_cnf.metrics.calibration import ReliabilityBins, reliability_bins, sample_set_metrics
from monai_cnf.metrics.image import psnr_y, ssim_y
from monai_cnf.metrics.segmentation import max_f_score, pr_curve, sample_precision_recall

__all__ = ["CalibrationReport", "analyse_segmentation", "analyse_super_resolution"]

logger = logging.getLogger(__name__)


@dataclass
class CalibrationReport:
    """Result of an analysis: finite scalar metrics, the PNG files written, and per-image rows.

    Attributes:
        metrics: ``"<model>/<metric>"`` -> float, all finite (MLflow-compatible names), see the analysis
            functions for the list.
        plots: paths of the PNG files written.
        per_image: one dict per (image, model) with the per-image numbers (for a table / CSV).
    """

    metrics: dict[str, float] = field(default_factory=dict)
    plots: list[Path] = field(default_factory=list)
    per_image: list[dict[str, float | str]] = field(default_factory=list)


@dataclass
class _ModelAccumulator:
    scores: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    bins: ReliabilityBins | None = None
    points: list[np.ndarray] = field(default_factory=list)
    ged: list[float] = field(default_factory=list)
    hm_iou: list[float] = field(default_factory=list)
    bpd: list[float] = field(default_factory=list)


def _file_stem(name: str, index: int) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")
    return f"{index:03d}_{safe}" if safe else f"{index:03d}"


def analyse_segmentation(
    cases: Iterable[SegmentationCase],
    out_dir: str | Path,
    num_bins: int = 10,
    num_grid_images: int = 2,
    num_grid_samples: int = 4,
    grid_crop: Sequence[tuple[int, int]] | None = None,
) -> CalibrationReport:
    """Compare binary segmentation models by their samples: PR curves, PR scatter, calibration, GED, HM-IoU.

    For every model in the cases' ``samples`` (e.g. ``"cnf"`` and ``"factored"``), with ``observers[0]`` the
    reference and the pixels inside each case's mask:

    - ``<model>/max_f``, ``/max_f_threshold``, ``/max_f_precision``, ``/max_f_recall``: max F-score of the PR curve
      of the mean map (mean of samples, or the given soft map), pooled over all images
      (:func:`monai_cnf.metrics.max_f_score`);
    - ``<model>/ece``: expected calibration error of the mean map, ``num_bins`` bins, pooled
      (:func:`monai_cnf.metrics.expected_calibration_error`);
    - ``<model>/sample_precision``, ``/sample_recall``, ``/sample_f``: means over all images and samples of the
      per-sample precision, recall and F (:func:`monai_cnf.metrics.sample_precision_recall`);
    - ``<model>/ged``, ``/hm_iou``: mean over images of the GED (d = 1 − IoU) and the Hungarian-matched IoU between
      the samples and the set of all observers;
    - ``<model>/bits_per_dim``: mean over images of the given bits/dim (only when the cases carry it);
    - ``observer2/precision``, ``/recall``, ``/f``: the 2nd observer scored against the reference, pooled over
      images (DRIVE's "human" number); only when the cases have two or more observers.

    Plots written to ``out_dir``: ``pr_curves.png`` (paper Fig. 6 left), ``pr_scatter.png`` (Fig. 6 right),
    ``reliability.png``, and ``samples_<index>_<name>.png`` for the first ``num_grid_images`` images (Fig. 4).

    Args:
        cases: iterable of :class:`~monai_cnf.calibration.SegmentationCase` (consumed once, image by image); every
            case must have the same model names.
        out_dir: folder for the PNG files (created).
        num_bins: reliability / ECE bins. Defaults to 10.
        num_grid_images: images that get a sample grid. Defaults to 2.
        num_grid_samples: samples per model in a grid. Defaults to 4.
        grid_crop: optional ``(start, stop)`` per spatial dim: the grids show this detail (as Fig. 4).
            Defaults to None (whole images).

    Returns:
        :class:`CalibrationReport`.

    Raises:
        ValueError: on invalid cases (see :meth:`SegmentationCase.validated`), model names that differ between
            cases, no case, or no positive reference pixel inside the masks.

    Example:
        >>> import tempfile
        >>> y = np.zeros((8, 8)); y[2:6, 3] = 1
        >>> case = SegmentationCase(image=np.zeros((3, 8, 8)), observers=[y, y],
        ...                         samples={"cnf": np.stack([y] * 4)}, name="toy")
        >>> report = analyse_segmentation([case], tempfile.mkdtemp())
        >>> report.metrics["cnf/max_f"], report.metrics["cnf/ged"], len(report.plots)
        (1.0, 0.0, 4)
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    models: list[str] | None = None
    acc: dict[str, _ModelAccumulator] = {}
    obs_points: list[tuple[float, float]] = []
    obs_counts = np.zeros(3)  # pooled TP, predicted positives, reference positives of observer 2
    report = CalibrationReport()
    n_images = 0
    for index, raw in enumerate(cases):
        case = raw.validated()
        if models is None:
            models = list(case.samples)
            acc = {m: _ModelAccumulator() for m in models}
        elif list(case.samples) != models:
            raise ValueError(f"case {index} has models {list(case.samples)}, the first case had {models}.")
        ref = case.observers[0]
        mask = case.mask if case.mask is not None else np.ones(ref.shape, dtype=bool)
        annotators = np.stack(case.observers)
        means: dict[str, np.ndarray] = {}
        for m in models:
            a = acc[m]
            s = case.samples[m]
            mean = case.prob_maps.get(m, s.mean(0, dtype=np.float64))
            means[m] = mean
            a.scores.append(np.asarray(mean[mask], dtype=np.float64))
            a.labels.append(ref[mask])
            b = reliability_bins(mean, ref, mask, num_bins)
            a.bins = b if a.bins is None else a.bins + b
            pts = sample_precision_recall(s, ref, mask)
            a.points.append(pts)
            ged, hm = sample_set_metrics(s, annotators, mask)
            a.ged.append(ged)
            a.hm_iou.append(hm)
            row: dict[str, float | str] = {"image": case.name or str(index), "model": m, "ged": ged, "hm_iou": hm}
            row["sample_precision"], row["sample_recall"] = (float(v) for v in pts.mean(0))
            if m in case.bits_per_dim:
                a.bpd.append(case.bits_per_dim[m])
                row["bits_per_dim"] = case.bits_per_dim[m]
            report.per_image.append(row)
        if len(case.observers) > 1:
            o2 = case.observers[1]
            p, r = sample_precision_recall(o2[None], ref, mask)[0]
            obs_points.append((float(p), float(r)))
            obs_counts += [np.sum(o2 & ref & mask), np.sum(o2 & mask), np.sum(ref & mask)]
        if index < num_grid_images:
            path = out / f"samples_{_file_stem(case.name, index)}.png"
            report.plots.append(
                plot_sample_grid(
                    case.image, case.observers, case.samples, path, means, num_grid_samples, case.name, grid_crop
                )
            )
        n_images += 1
        logger.debug("calibration: analysed image %d (%s)", index, case.name)
    if models is None:
        raise ValueError("`cases` is empty; give at least one SegmentationCase.")

    curves = {}
    for m in models:
        a = acc[m]
        scores, labels = np.concatenate(a.scores), np.concatenate(a.labels)
        a.scores, a.labels = [], []
        precision, recall, _ = pr_curve(scores, labels)
        best = max_f_score(scores, labels)
        curves[m] = (precision, recall, best)
        pts = np.concatenate(a.points)
        denom = pts[:, 0] + pts[:, 1]
        sample_f = np.divide(2 * pts[:, 0] * pts[:, 1], denom, out=np.zeros_like(denom), where=denom > 0)
        report.metrics.update(
            {
                f"{m}/max_f": best.f_score,
                f"{m}/max_f_threshold": best.threshold,
                f"{m}/max_f_precision": best.precision,
                f"{m}/max_f_recall": best.recall,
                f"{m}/ece": a.bins.ece if a.bins is not None else math.nan,
                f"{m}/sample_precision": float(pts[:, 0].mean()),
                f"{m}/sample_recall": float(pts[:, 1].mean()),
                f"{m}/sample_f": float(sample_f.mean()),
                f"{m}/ged": float(np.mean(a.ged)),
                f"{m}/hm_iou": float(np.mean(a.hm_iou)),
            }
        )
        if a.bpd:
            if len(a.bpd) != n_images:
                logger.warning("bits/dim of %s given for %d of %d images", m, len(a.bpd), n_images)
            report.metrics[f"{m}/bits_per_dim"] = float(np.mean(a.bpd))
    observer_point = None
    if obs_points:
        tp, pred_pos, pos = obs_counts
        p = tp / pred_pos if pred_pos > 0 else 1.0
        r = tp / pos if pos > 0 else 1.0
        f = 2 * p * r / (p + r) if p + r > 0 else 0.0
        observer_point = (float(p), float(r), float(f))
        report.metrics.update({"observer2/precision": p, "observer2/recall": r, "observer2/f": f})
    report.plots.append(plot_pr_curves(curves, out / "pr_curves.png", observer_point))
    report.plots.append(plot_pr_scatter({m: acc[m].points for m in models}, out / "pr_scatter.png", obs_points))
    report.plots.append(plot_reliability({m: acc[m].bins for m in models}, out / "reliability.png"))  # type: ignore[misc]
    report.metrics = {k: float(v) for k, v in report.metrics.items()}
    bad = [k for k, v in report.metrics.items() if not math.isfinite(v)]
    if bad:
        raise ValueError(f"non-finite metrics {bad}; check the inputs (empty masks or references?).")
    return report


def analyse_super_resolution(
    cases: Iterable[SuperResolutionCase],
    out_dir: str | Path,
    scale: int = 2,
    num_grid_images: int = 2,
) -> CalibrationReport:
    """Score SR predictions at several temperatures and draw temperature-sweep grids (paper Figs. 3, 7-9).

    Metrics (means over images): ``<model>/psnr_y_t<tau>`` and ``<model>/ssim_y_t<tau>`` for every temperature
    (Y channel, border crop ``scale``; :func:`monai_cnf.metrics.psnr_y` / :func:`~monai_cnf.metrics.ssim_y`), and
    ``<model>/bits_per_dim`` when the cases carry it. Identical prediction and reference (infinite PSNR) raise.
    Plots: ``temperature_sweep_<index>_<name>.png`` for the first ``num_grid_images`` images.

    Args:
        cases: iterable of :class:`~monai_cnf.calibration.SuperResolutionCase`, consumed once.
        out_dir: folder for the PNG files (created).
        scale: SR factor = border crop. Defaults to 2.
        num_grid_images: images that get a grid. Defaults to 2.

    Returns:
        :class:`CalibrationReport`.
    """
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = CalibrationReport()
    sums: dict[str, list[float]] = {}
    n_images = 0
    for index, raw in enumerate(cases):
        case = raw.validated()
        hr = torch.from_numpy(case.hr)[None]
        scores: dict[str, dict[float, tuple[float, float]]] = {}
        for model, by_tau in case.predictions.items():
            scores[model] = {}
            for tau, pred in by_tau.items():
                pt = torch.from_numpy(pred)[None]
                p, s = float(psnr_y(pt, hr, crop_border=scale)), float(ssim_y(pt, hr, crop_border=scale))
                scores[model][tau] = (p, s)
                sums.setdefault(f"{model}/psnr_y_t{tau:g}", []).append(p)
                sums.setdefault(f"{model}/ssim_y_t{tau:g}", []).append(s)
                report.per_image.append(
                    {"image": case.name or str(index), "model": model, "temperature": tau, "psnr_y": p, "ssim_y": s}
                )
            if model in case.bits_per_dim:
                sums.setdefault(f"{model}/bits_per_dim", []).append(case.bits_per_dim[model])
        if index < num_grid_images:
            path = out / f"temperature_sweep_{_file_stem(case.name, index)}.png"
            report.plots.append(plot_temperature_sweep(case.lr, case.hr, case.predictions, path, scores, case.name))
        n_images += 1
    if n_images == 0:
        raise ValueError("`cases` is empty; give at least one SuperResolutionCase.")
    report.metrics = {k: float(np.mean(v)) for k, v in sums.items()}
    bad = [k for k, v in report.metrics.items() if not math.isfinite(v)]
    if bad:
        raise ValueError(f"non-finite metrics {bad} (a prediction identical to `hr` has infinite PSNR).")
    return report
