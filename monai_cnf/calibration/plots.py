"""Matplotlib figures of the calibration analysis, written as PNG files (no pyplot state, Agg canvas).

Every function takes plain numpy data, writes one PNG and returns its path, so the figures can also be made
from numbers computed elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from monai_cnf.metrics.calibration import ReliabilityBins
from monai_cnf.metrics.segmentation import MaxFScore

__all__ = [
    "plot_pr_curves",
    "plot_pr_scatter",
    "plot_reliability",
    "plot_sample_grid",
    "plot_temperature_sweep",
]

_COLORS = ("tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange", "tab:brown")


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def _f_iso_lines(ax: object) -> None:
    r = np.linspace(0.01, 1, 200)
    for f in (0.2, 0.4, 0.6, 0.8):
        p = f * r / (2 * r - f)
        ok = (p > 0) & (p <= 1)
        ax.plot(r[ok], p[ok], color="0.85", lw=0.8, zorder=0)  # type: ignore[attr-defined]


def _pr_axes(ax: object, title: str) -> None:
    _f_iso_lines(ax)
    ax.set_xlim(0, 1)  # type: ignore[attr-defined]
    ax.set_ylim(0, 1)  # type: ignore[attr-defined]
    ax.set_xlabel("recall")  # type: ignore[attr-defined]
    ax.set_ylabel("precision")  # type: ignore[attr-defined]
    ax.set_title(title)  # type: ignore[attr-defined]
    ax.set_aspect("equal")  # type: ignore[attr-defined]


def plot_pr_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray, MaxFScore]],
    path: str | Path,
    observer_point: tuple[float, float, float] | None = None,
    title: str = "PR curves of the mean of samples",
) -> Path:
    """PR curves (one per model) with the max F-score marked (paper Fig. 6 left).

    Args:
        curves: model name -> ``(precision, recall, max_f)`` as from :func:`monai_cnf.metrics.pr_curve` and
            :func:`monai_cnf.metrics.max_f_score`.
        path: output PNG path.
        observer_point: optional pooled ``(precision, recall, F)`` of a human grader, drawn as a star.
            Defaults to None.
        title: figure title. Defaults to "PR curves of the mean of samples".

    Returns:
        the PNG path.
    """
    fig = Figure(figsize=(5.5, 5.5))
    ax = fig.add_subplot(1, 1, 1)
    _pr_axes(ax, title)
    for i, (name, (precision, recall, best)) in enumerate(curves.items()):
        c = _COLORS[i % len(_COLORS)]
        ax.plot(recall, precision, color=c, lw=1.5, label=f"{name} (max F {best.f_score:.3f})")
        ax.plot([best.recall], [best.precision], "o", color=c, ms=7, mec="k")
    if observer_point is not None:
        p, r, f = observer_point
        ax.plot([r], [p], "*", color="k", ms=12, label=f"2nd observer (F {f:.3f})")
    ax.legend(loc="lower left", fontsize=8)
    return _save(fig, path)


def plot_pr_scatter(
    points: Mapping[str, Sequence[np.ndarray]],
    path: str | Path,
    observer_points: Sequence[tuple[float, float]] | None = None,
    title: str = "Per-sample precision / recall",
) -> Path:
    """PR-space scatter of individual binary samples of every image (paper Fig. 6 right).

    Args:
        points: model name -> list (one per image) of ``(S, 2)`` arrays of ``(precision, recall)`` per sample, as
            from :func:`monai_cnf.metrics.sample_precision_recall`.
        path: output PNG path.
        observer_points: optional per-image ``(precision, recall)`` of a human grader. Defaults to None.
        title: figure title. Defaults to "Per-sample precision / recall".

    Returns:
        the PNG path.
    """
    fig = Figure(figsize=(5.5, 5.5))
    ax = fig.add_subplot(1, 1, 1)
    _pr_axes(ax, title)
    for i, (name, per_image) in enumerate(points.items()):
        pts = np.concatenate([np.asarray(p).reshape(-1, 2) for p in per_image]) if per_image else np.zeros((0, 2))
        ax.scatter(pts[:, 1], pts[:, 0], s=6, alpha=0.35, color=_COLORS[i % len(_COLORS)], label=name, lw=0)
    if observer_points:
        obs = np.asarray(observer_points, dtype=float).reshape(-1, 2)
        ax.scatter(obs[:, 1], obs[:, 0], s=30, marker="*", color="k", label="2nd observer")
    ax.legend(loc="lower left", fontsize=8, markerscale=2)
    return _save(fig, path)


def plot_reliability(bins: Mapping[str, ReliabilityBins], path: str | Path, title: str = "Reliability") -> Path:
    """Reliability diagram (observed positive frequency vs mean predicted probability per bin) with ECE, plus
    the pixel count per bin (log scale) below.

    Args:
        bins: model name -> :class:`monai_cnf.metrics.ReliabilityBins` of its mean map.
        path: output PNG path.
        title: figure title. Defaults to "Reliability".

    Returns:
        the PNG path.
    """
    fig = Figure(figsize=(5.5, 7))
    ax = fig.add_subplot(2, 1, 1)
    hist = fig.add_subplot(2, 1, 2)
    ax.plot([0, 1], [0, 1], "--", color="0.5", lw=1, label="perfect calibration")
    n_models = max(1, len(bins))
    for i, (name, b) in enumerate(bins.items()):
        c = _COLORS[i % len(_COLORS)]
        ok = b.counts > 0
        ax.plot(b.confidence[ok], b.accuracy[ok], "o-", color=c, label=f"{name} (ECE {b.ece:.4f})")
        width = np.diff(b.edges) / (n_models + 1)
        hist.bar(b.edges[:-1] + (i + 0.5) * width, np.maximum(b.counts, 0), width=width, color=c, label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed frequency of the positive class")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    hist.set_yscale("symlog")
    hist.set_xlim(0, 1)
    hist.set_xlabel("predicted probability bin")
    hist.set_ylabel("pixels")
    return _save(fig, path)


def _middle_slice(a: np.ndarray, ndim: int) -> np.ndarray:
    while a.ndim > ndim:  # 3D volumes: show the middle slice of the last axis
        a = a[..., a.shape[-1] // 2]
    return a


def _display_map(m: np.ndarray) -> np.ndarray:
    """A (H, W) view of a map ``(*spatial)``."""
    return _middle_slice(np.asarray(m, dtype=float), 2)


def _display_image(img: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """A (H, W, 3) or (H, W) view in [0, 1] of a channel-first image ``(C, *spatial)`` with values in [0, scale]."""
    a = np.moveaxis(_middle_slice(np.asarray(img, dtype=float) / scale, 3), 0, -1)
    return np.clip(a if a.shape[-1] == 3 else a[..., 0], 0.0, 1.0)


def _show_image(ax: object, img: np.ndarray, scale: float = 1.0, **kwargs: object) -> None:
    a = _display_image(img, scale)
    ax.imshow(a, cmap=None if a.ndim == 3 else "gray", vmin=0, vmax=1, **kwargs)  # type: ignore[attr-defined]


def plot_sample_grid(
    image: np.ndarray,
    observers: Sequence[np.ndarray],
    samples: Mapping[str, np.ndarray],
    path: str | Path,
    mean_maps: Mapping[str, np.ndarray] | None = None,
    num_samples: int = 4,
    title: str = "",
    crop: Sequence[tuple[int, int]] | None = None,
) -> Path:
    """Sample grid (paper Fig. 4): the image and the observers, then per model a few samples, the mean and std.

    Row 0: image, observer 1, observer 2, ...; row ``m + 1``: model ``m``'s first ``num_samples`` samples, its mean
    map and its std map. For binary samples the per-pixel std is :math:`\\sqrt{\\bar y(1 - \\bar y)}` with
    :math:`\\bar y` the mean map (exact for the empirical std of 0/1 samples and for a Bernoulli soft map).

    Args:
        image: ``(C, *spatial)`` in [0, 1].
        observers: binary maps ``(*spatial)``.
        samples: model name -> ``(S, *spatial)`` binary samples.
        path: output PNG path.
        mean_maps: optional model name -> mean map (defaults to the mean of the samples). Defaults to None.
        num_samples: samples shown per model. Defaults to 4.
        title: figure title. Defaults to "".
        crop: optional ``(start, stop)`` per spatial dim to show a detail (as the paper's Fig. 4), e.g.
            ``[(200, 328), (200, 328)]``. Defaults to None (the whole image).

    Returns:
        the PNG path.
    """
    if crop is not None:
        if len(crop) != np.asarray(image).ndim - 1:
            raise ValueError(f"`crop` needs one (start, stop) per spatial dim of `image`, got {crop}.")
        sl = tuple(slice(int(a), int(b)) for a, b in crop)
        image = np.asarray(image)[(slice(None), *sl)]
        observers = [np.asarray(o)[sl] for o in observers]
        samples = {n: np.asarray(v)[(slice(None), *sl)] for n, v in samples.items()}
        mean_maps = {n: np.asarray(v)[sl] for n, v in (mean_maps or {}).items()}
    k = max(1, int(num_samples))
    ncols = max(k + 2, 1 + len(observers))
    nrows = 1 + len(samples)
    fig = Figure(figsize=(2.4 * ncols, 2.5 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    _show_image(axes[0, 0], image)
    axes[0, 0].set_title("image", fontsize=8)
    for j, obs in enumerate(observers):
        axes[0, j + 1].imshow(_display_map(obs), cmap="gray", vmin=0, vmax=1)
        axes[0, j + 1].set_title(f"observer {j + 1}", fontsize=8)
    for i, (name, s) in enumerate(samples.items()):
        s = np.asarray(s)
        mean = np.asarray(mean_maps[name]) if mean_maps and name in mean_maps else s.mean(0)
        for j in range(min(k, s.shape[0])):
            axes[i + 1, j].imshow(_display_map(s[j]), cmap="gray", vmin=0, vmax=1)
            axes[i + 1, j].set_title(f"{name} sample {j + 1}", fontsize=8)
        axes[i + 1, k].imshow(_display_map(mean), cmap="gray", vmin=0, vmax=1)
        axes[i + 1, k].set_title(f"{name} mean", fontsize=8)
        axes[i + 1, k + 1].imshow(_display_map(np.sqrt(mean * (1 - mean))), cmap="magma", vmin=0, vmax=0.5)
        axes[i + 1, k + 1].set_title(f"{name} std", fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_temperature_sweep(
    lr: np.ndarray,
    hr: np.ndarray,
    predictions: Mapping[str, Mapping[float, np.ndarray]],
    path: str | Path,
    scores: Mapping[str, Mapping[float, tuple[float, float]]] | None = None,
    title: str = "",
) -> Path:
    """Super-resolution temperature sweep (paper Figs. 3, 7-9): LR, HR, then per model one image per temperature.

    Args:
        lr: low-resolution input ``(3, h, w)`` in [0, 1].
        hr: reference ``(3, H, W)`` in [0, 255].
        predictions: model name -> {temperature: ``(3, H, W)`` in [0, 255]}.
        path: output PNG path.
        scores: optional model name -> {temperature: (PSNR-Y, SSIM-Y)} for the panel titles. Defaults to None.
        title: figure title. Defaults to "".

    Returns:
        the PNG path.
    """
    ncols = max(2, *(len(v) for v in predictions.values()))
    nrows = 1 + len(predictions)
    fig = Figure(figsize=(2.4 * ncols, 2.5 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    _show_image(axes[0, 0], lr, interpolation="nearest")
    axes[0, 0].set_title("LR input", fontsize=8)
    _show_image(axes[0, 1], hr, 255.0)
    axes[0, 1].set_title("HR reference", fontsize=8)
    for i, (name, by_tau) in enumerate(predictions.items()):
        for j, tau in enumerate(sorted(by_tau)):
            _show_image(axes[i + 1, j], by_tau[tau], 255.0)
            label = f"{name} τ={tau:g}"
            if scores and name in scores and tau in scores[name]:
                p, s = scores[name][tau]
                label += f"\n{p:.2f} dB / {s:.3f}"
            axes[i + 1, j].set_title(label, fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)
