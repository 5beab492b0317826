"""Calibration library on tiny synthetic cases: valid PNGs, finite in-range metrics that equal direct calls."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from monai_cnf.calibration import (
    SegmentationCase,
    SuperResolutionCase,
    analyse_segmentation,
    analyse_super_resolution,
    bernoulli_samples,
)
from monai_cnf.metrics import (
    expected_calibration_error,
    generalized_energy_distance,
    hungarian_matched_iou,
    max_f_score,
    psnr_y,
    sample_precision_recall,
    ssim_y,
)


def _vessels(g: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    y = np.zeros(shape, dtype=bool)
    for _ in range(3):
        r = g.integers(2, shape[0] - 2)
        y[r, :] = True
        c = g.integers(2, shape[1] - 2)
        y[:, c] = True
    return y


def _cases(n: int = 3, s: int = 6, shape: tuple[int, ...] = (20, 18)) -> list[SegmentationCase]:
    g = np.random.default_rng(0)
    out = []
    for i in range(n):
        y1 = _vessels(g, shape)
        y2 = y1 ^ (g.random(shape) < 0.05)  # 2nd observer: the reference with 5% flips
        mask = np.ones(shape, dtype=bool)
        mask[0, :] = False  # a non-trivial FOV
        cnf = np.stack([y1 ^ (g.random(shape) < 0.08) for _ in range(s)])
        soft = np.clip(0.7 * y1 + 0.15 + 0.1 * g.random(shape), 0, 1)
        out.append(
            SegmentationCase(
                image=g.random((3, *shape)),
                observers=[y1.astype(np.float32), torch.from_numpy(y2).float()[None]],  # numpy and (1, H, W) torch
                samples={"cnf": cnf, "factored": bernoulli_samples(soft, s, seed=i)},
                mask=mask,
                prob_maps={"factored": soft},
                bits_per_dim={"cnf": 0.05 + 0.01 * i, "factored": 0.1},
                name=f"img{i}",
            )
        )
    return out


def _check_pngs(paths: list[Path]) -> None:
    assert paths
    for p in paths:
        assert Path(p).stat().st_size > 0
        with Image.open(p) as im:
            assert im.format == "PNG"
            im.verify()
        with Image.open(p) as im:
            assert im.size[0] > 50 and im.size[1] > 50


def test_analyse_segmentation_plots_and_metrics(tmp_path: Path) -> None:
    cases = _cases()

    def stream() -> Iterator[SegmentationCase]:  # consumed once, like the CLI's lazy sampler
        yield from cases

    report = analyse_segmentation(
        stream(), tmp_path / "out", num_bins=5, num_grid_images=2, num_grid_samples=3, grid_crop=[(2, 14), (0, 10)]
    )
    _check_pngs(report.plots)
    names = sorted(p.name for p in report.plots)
    assert names == [
        "pr_curves.png",
        "pr_scatter.png",
        "reliability.png",
        "samples_000_img0.png",
        "samples_001_img1.png",
    ]
    m = report.metrics
    assert all(math.isfinite(v) for v in m.values())
    for model in ("cnf", "factored"):
        for key in ("max_f", "max_f_precision", "max_f_recall", "sample_precision", "sample_recall", "sample_f"):
            assert 0.0 <= m[f"{model}/{key}"] <= 1.0
        assert 0.0 <= m[f"{model}/ece"] <= 1.0
        assert 0.0 <= m[f"{model}/ged"] <= 2.0
        assert 0.0 <= m[f"{model}/hm_iou"] <= 1.0

    # the numbers are those of the metric functions applied directly
    masks = [c.mask for c in cases]
    refs = [np.asarray(c.observers[0]) for c in cases]
    cnf_means = [c.samples["cnf"].mean(0) for c in cases]
    fac_maps = [c.prob_maps["factored"] for c in cases]
    assert m["cnf/max_f"] == pytest.approx(max_f_score(cnf_means, refs, masks).f_score, rel=1e-6)
    assert m["factored/max_f"] == pytest.approx(max_f_score(fac_maps, refs, masks).f_score, rel=1e-6)
    assert m["factored/ece"] == pytest.approx(expected_calibration_error(fac_maps, refs, masks, num_bins=5))
    annot = [np.stack([np.asarray(c.observers[0]) > 0, c.observers[1].numpy()[0] > 0]) for c in cases]
    ged = np.mean([generalized_energy_distance(c.samples["cnf"], a, c.mask) for c, a in zip(cases, annot, strict=True)])
    hm = np.mean([hungarian_matched_iou(c.samples["cnf"], a, c.mask) for c, a in zip(cases, annot, strict=True)])
    assert m["cnf/ged"] == pytest.approx(ged)
    assert m["cnf/hm_iou"] == pytest.approx(hm)
    assert m["cnf/bits_per_dim"] == pytest.approx(0.06)
    # the remaining metrics, each against its function applied directly (not only their ranges)
    assert m["cnf/ece"] == pytest.approx(expected_calibration_error(cnf_means, refs, masks, num_bins=5))
    fac_samples = [c.samples["factored"] for c in cases]
    ged_f = np.mean(
        [generalized_energy_distance(s, a, c.mask) for s, a, c in zip(fac_samples, annot, cases, strict=True)]
    )
    hm_f = np.mean([hungarian_matched_iou(s, a, c.mask) for s, a, c in zip(fac_samples, annot, cases, strict=True)])
    assert m["factored/ged"] == pytest.approx(ged_f)
    assert m["factored/hm_iou"] == pytest.approx(hm_f)
    for model, maps in (("cnf", cnf_means), ("factored", fac_maps)):
        best = max_f_score(maps, refs, masks)
        assert (m[f"{model}/max_f_precision"], m[f"{model}/max_f_recall"]) == pytest.approx(
            (best.precision, best.recall)
        )
        pts = np.concatenate(
            [sample_precision_recall(c.samples[model], r, c.mask) for c, r in zip(cases, refs, strict=True)]
        )
        f = 2 * pts[:, 0] * pts[:, 1] / np.maximum(pts[:, 0] + pts[:, 1], 1e-300)
        assert (m[f"{model}/sample_precision"], m[f"{model}/sample_recall"]) == pytest.approx(tuple(pts.mean(0)))
        assert m[f"{model}/sample_f"] == pytest.approx(f.mean())
    assert m["cnf/sample_precision"] != pytest.approx(m["factored/sample_precision"])  # the two models differ
    # 2nd observer pooled over images, counted by hand
    tp = sum(np.sum(a[1] & a[0] & c.mask) for a, c in zip(annot, cases, strict=True))
    pp = sum(np.sum(a[1] & c.mask) for a, c in zip(annot, cases, strict=True))
    pos = sum(np.sum(a[0] & c.mask) for a, c in zip(annot, cases, strict=True))
    assert m["observer2/precision"] == pytest.approx(tp / pp)
    assert m["observer2/recall"] == pytest.approx(tp / pos)
    assert len(report.per_image) == 6


def test_analyse_segmentation_single_observer_and_3d(tmp_path: Path) -> None:
    g = np.random.default_rng(1)
    y = g.random((6, 8, 4)) < 0.3
    case = SegmentationCase(image=g.random((1, 6, 8, 4)), observers=[y], samples={"cnf": np.stack([y, ~y])[:, None]})
    report = analyse_segmentation([case], tmp_path)
    _check_pngs(report.plots)
    assert "observer2/f" not in report.metrics
    # samples y and ~y against the single annotator y: d_sa = [0, 1], d_ss mean 0.5 -> GED 2 * 0.5 - 0.5 = 0.5
    assert report.metrics["cnf/ged"] == pytest.approx(0.5)
    assert report.metrics["cnf/hm_iou"] == pytest.approx(0.5)  # lcm(2, 1) = 2: y matches y (1), ~y matches y (0)


def test_analyse_segmentation_bad_input(tmp_path: Path) -> None:
    cases = _cases(n=2)
    cases[1].samples = {"cnf": cases[1].samples["cnf"]}
    cases[1].prob_maps = {}
    with pytest.raises(ValueError, match="models"):
        analyse_segmentation(cases, tmp_path)
    with pytest.raises(ValueError, match="cases"):
        analyse_segmentation([], tmp_path)
    bad = _cases(n=1)[0]
    bad.samples = {"cnf": np.full((2, 20, 18), 0.5)}
    with pytest.raises(ValueError, match="samples"):
        analyse_segmentation([bad], tmp_path)
    bad = _cases(n=1)[0]
    bad.mask = np.ones((20, 17))
    with pytest.raises(ValueError, match="mask"):
        analyse_segmentation([bad], tmp_path)
    bad = _cases(n=1)[0]
    bad.samples = {"cnf/x": bad.samples["cnf"]}
    with pytest.raises(ValueError, match="model name"):
        analyse_segmentation([bad], tmp_path)
    with pytest.raises(ValueError, match="crop"):
        analyse_segmentation(_cases(n=1), tmp_path, grid_crop=[(0, 4)])


def test_bernoulli_samples_frequency() -> None:
    p = np.array([0.0, 0.25, 0.5, 1.0])
    s = bernoulli_samples(p, 4000, seed=3)
    assert s.dtype == bool and s.shape == (4000, 4)
    np.testing.assert_allclose(s.mean(0), p, atol=0.03)  # 4 sigma of sqrt(.25/4000) ~ 0.03


def test_analyse_super_resolution(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    cases = []
    taus = (0.0, 0.5, 0.8, 1.0)
    for i in range(2):
        hr = torch.randint(0, 256, (3, 28, 26), generator=g).double()
        lr = torch.nn.functional.avg_pool2d(hr[None], 2)[0] / 255
        noise = torch.randn((2, len(taus), *hr.shape), generator=g, dtype=torch.float64)
        preds = {
            m: {t: (hr + (5 + 10 * t + k) * noise[k, j]).clamp(0, 255).round() for j, t in enumerate(taus)}
            for k, m in enumerate(("cnf", "factored"))
        }
        cases.append(SuperResolutionCase(lr, hr, preds, {"cnf": 3.0 + i}, name=f"sr{i}"))
    report = analyse_super_resolution(iter(cases), tmp_path, scale=2, num_grid_images=1)
    _check_pngs(report.plots)
    assert [p.name for p in report.plots] == ["temperature_sweep_000_sr0.png"]
    m = report.metrics
    assert set(m) == {f"{md}/{k}_t{t:g}" for md in ("cnf", "factored") for k in ("psnr_y", "ssim_y") for t in taus} | {
        "cnf/bits_per_dim"
    }
    expected = np.mean([float(psnr_y(c.predictions["cnf"][0.8][None], c.hr[None], 2)) for c in cases])
    assert m["cnf/psnr_y_t0.8"] == pytest.approx(expected)
    expected = np.mean([float(ssim_y(c.predictions["factored"][1.0][None], c.hr[None], 2)) for c in cases])
    assert m["factored/ssim_y_t1"] == pytest.approx(expected)
    assert m["cnf/bits_per_dim"] == pytest.approx(3.5)
    assert all(math.isfinite(v) for v in m.values())
    assert m["cnf/psnr_y_t0"] > m["cnf/psnr_y_t1"]  # more noise at higher temperature in this synthetic set
    with pytest.raises(ValueError, match="lr"):
        analyse_super_resolution([SuperResolutionCase(cases[0].lr * 255, cases[0].hr, cases[0].predictions)], tmp_path)
