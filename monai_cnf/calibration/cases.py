"""Per-image inputs of the calibration analysis, and the factored model's Bernoulli sampler."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from monai_cnf.metrics._validation import as_binary, as_numpy, as_probability

__all__ = ["SegmentationCase", "SuperResolutionCase", "bernoulli_samples", "check_model_name"]

_NAME = re.compile(r"^[A-Za-z0-9_\-. ]+$")


def check_model_name(name: str) -> str:
    """Model names become file names and MLflow metric prefixes: letters, digits, ``_ - .`` and spaces only."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"model name {name!r} must use only letters, digits, '_', '-', '.' and spaces (e.g. 'cnf').")
    return name


def bernoulli_samples(prob: Any, num_samples: int, seed: int | np.random.Generator | None = 0) -> np.ndarray:
    """Independent Bernoulli samples of a soft map: how a factored model is sampled (the paper's Fig. 6 right).

    Args:
        prob: probabilities in [0, 1], ``(*spatial)``.
        num_samples: number of samples S.
        seed: seed or ``numpy.random.Generator``. Defaults to 0.

    Returns:
        bool array ``(S, *spatial)`` with ``P(sample = 1) = prob`` per pixel, independently.

    Example:
        >>> bernoulli_samples(np.array([0.0, 1.0]), 3).astype(int).tolist()
        [[0, 1], [0, 1], [0, 1]]
    """
    if int(num_samples) < 1:
        raise ValueError(f"`num_samples` must be >= 1, got {num_samples}.")
    p = as_probability(prob, "prob")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return rng.random((int(num_samples), *p.shape)) < p


def _squeeze_channel(arr: np.ndarray, spatial_ndim: int, axis: int, name: str) -> np.ndarray:
    if arr.ndim == spatial_ndim + axis + 1:
        if arr.shape[axis] != 1:
            raise ValueError(f"`{name}` has {arr.shape[axis]} channels at axis {axis}; binary maps have one channel.")
        arr = np.take(arr, 0, axis=axis)
    if arr.ndim != spatial_ndim + axis:
        raise ValueError(
            f"`{name}` has shape {arr.shape}; expected {'(S, ' if axis else '('}*spatial) or with a channel."
        )
    return arr


@dataclass
class SegmentationCase:
    """Everything the analysis needs about one image (binary segmentation, e.g. DRIVE).

    Attributes:
        image: the input image, channel-first ``(C, *spatial)`` in [0, 1] (C = 1 or 3), for the sample grids.
        observers: binary annotator maps ``(*spatial)`` (or ``(1, *spatial)``). ``observers[0]`` is the reference
            (DRIVE's 1st observer) used for PR curves, max F and calibration; every further observer (DRIVE's 2nd)
            is scored as a human grader against it, and all observers form the annotator set of GED / HM-IoU.
        samples: model name -> binary samples ``(S, *spatial)`` (or ``(S, 1, *spatial)``). For a factored model
            use :func:`bernoulli_samples` of its soft map.
        mask: binary mask ``(*spatial)`` (e.g. the FOV) or None (all pixels). Defaults to None.
        prob_maps: optional model name -> exact soft map ``(*spatial)``; when given it replaces the mean of that
            model's samples for the PR curve, max F, ECE and the mean/std panels (a factored model's soft map is
            the limit of the mean of infinitely many Bernoulli samples). Defaults to empty.
        bits_per_dim: optional model name -> bits/dim of this image (from ``model.bits_per_dim``); averaged over
            images into the report. Defaults to empty.
        name: image name for plot titles and file names. Defaults to "".
    """

    image: Any
    observers: Sequence[Any]
    samples: Mapping[str, Any]
    mask: Any | None = None
    prob_maps: Mapping[str, Any] = field(default_factory=dict)
    bits_per_dim: Mapping[str, float] = field(default_factory=dict)
    name: str = ""

    def validated(self) -> SegmentationCase:
        """Return a copy with numpy arrays of checked shapes and types (bool maps, float image)."""
        image = as_numpy(self.image, "image")
        if image.ndim < 3:
            raise ValueError(
                f"`image` must be channel-first (C, *spatial), got shape {image.shape}; add a channel axis."
            )
        nd = image.ndim - 1
        spatial = image.shape[1:]
        if len(self.observers) < 1:
            raise ValueError("`observers` must hold at least the reference annotation.")
        observers = [_squeeze_channel(as_binary(o, "observers"), nd, 0, "observers") for o in self.observers]
        mask = None if self.mask is None else _squeeze_channel(as_binary(self.mask, "mask"), nd, 0, "mask")
        for arr, nm in [*((o, "observers") for o in observers), (mask, "mask")]:
            if arr is not None and arr.shape != spatial:
                raise ValueError(f"`{nm}` has spatial shape {arr.shape}, but `image` has {spatial}.")
        if not self.samples:
            raise ValueError("`samples` must map at least one model name to its samples.")
        samples = {}
        for model, s in self.samples.items():
            arr = _squeeze_channel(as_binary(s, f"samples[{model!r}]"), nd, 1, f"samples[{model!r}]")
            if arr.shape[1:] != spatial:
                raise ValueError(f"`samples[{model!r}]` has spatial shape {arr.shape[1:]}, but `image` has {spatial}.")
            samples[check_model_name(model)] = arr
        prob_maps = {}
        for model, p in self.prob_maps.items():
            if model not in samples:
                raise ValueError(f"`prob_maps` names model {model!r} that has no `samples`; give its samples too.")
            arr = _squeeze_channel(as_probability(p, f"prob_maps[{model!r}]"), nd, 0, f"prob_maps[{model!r}]")
            if arr.shape != spatial:
                raise ValueError(f"`prob_maps[{model!r}]` has shape {arr.shape}, but `image` has {spatial}.")
            prob_maps[model] = arr
        bpd = {}
        for model, v in self.bits_per_dim.items():
            if not np.isfinite(float(v)):
                raise ValueError(f"`bits_per_dim[{model!r}]` = {v} is not finite.")
            bpd[model] = float(v)
        return SegmentationCase(image, observers, samples, mask, prob_maps, bpd, str(self.name))


@dataclass
class SuperResolutionCase:
    """One super-resolution test image with predictions at several temperatures.

    Attributes:
        lr: low-resolution input ``(3, h, w)`` in [0, 1] (the SR conditioning convention).
        hr: high-resolution reference ``(3, H, W)`` with grey levels in [0, 255].
        predictions: model name -> {temperature: prediction ``(3, H, W)`` in [0, 255]}, e.g. temperatures
            ``{0.0, 0.5, 0.8, 1.0}`` (one sample per temperature; tau = 0 is the deterministic prediction).
        bits_per_dim: optional model name -> bits/dim of this image. Defaults to empty.
        name: image name. Defaults to "".
    """

    lr: Any
    hr: Any
    predictions: Mapping[str, Mapping[float, Any]]
    bits_per_dim: Mapping[str, float] = field(default_factory=dict)
    name: str = ""

    def validated(self) -> SuperResolutionCase:
        """Return a copy with checked numpy arrays."""
        lr = as_numpy(self.lr, "lr")
        hr = as_numpy(self.hr, "hr")
        if lr.ndim != 3 or lr.shape[0] != 3 or lr.min() < 0 or lr.max() > 1:
            raise ValueError(f"`lr` must be RGB (3, h, w) in [0, 1], got shape {lr.shape}; divide 8-bit images by 255.")
        if hr.ndim != 3 or hr.shape[0] != 3 or hr.min() < 0 or hr.max() > 255:
            raise ValueError(f"`hr` must be RGB (3, H, W) with grey levels in [0, 255], got shape {hr.shape}.")
        if not self.predictions:
            raise ValueError("`predictions` must map at least one model name to {temperature: image}.")
        preds: dict[str, dict[float, np.ndarray]] = {}
        for model, by_tau in self.predictions.items():
            preds[check_model_name(model)] = {}
            for tau, img in by_tau.items():
                arr = as_numpy(img, f"predictions[{model!r}][{tau}]")
                if arr.shape != hr.shape:
                    raise ValueError(f"`predictions[{model!r}][{tau}]` has shape {arr.shape}, `hr` has {hr.shape}.")
                if float(tau) < 0:
                    raise ValueError(f"temperatures must be >= 0, got {tau} for model {model!r}.")
                preds[model][float(tau)] = arr
        bpd = {m: float(v) for m, v in self.bits_per_dim.items()}
        return SuperResolutionCase(lr, hr, preds, bpd, str(self.name))
