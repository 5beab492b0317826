"""Input conversion and checks shared by the metrics (numpy in, ValueError naming the argument out)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["as_binary", "as_image_list", "as_numpy", "as_probability", "pool_masked"]


def as_numpy(x: Any, name: str, dtype: Any = np.float64) -> np.ndarray:
    """Convert a numpy array / torch tensor / nested list to a numpy array, rejecting NaNs."""
    if hasattr(x, "detach"):  # torch.Tensor without importing torch
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=dtype)
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise ValueError(f"`{name}` contains NaN; check the model output / data pipeline.")
    return arr


def as_binary(x: Any, name: str) -> np.ndarray:
    """Return ``x`` as a bool array; raise if it holds NaNs or values other than 0/1 (or False/True).

    Works in the input's own dtype (no float64 copy of large sample stacks).
    """
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"`{name}` must be a numeric or bool array of 0/1 values, got dtype {arr.dtype}.")
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise ValueError(f"`{name}` contains NaN; binary maps must hold exactly 0 and 1.")
    if not ((arr == 0) | (arr == 1)).all():
        raise ValueError(f"`{name}` must be binary (values exactly 0 and 1); threshold it first, e.g. `{name} > 0.5`.")
    return arr != 0


def as_probability(x: Any, name: str) -> np.ndarray:
    """Return ``x`` as float64; raise if NaN or outside [0, 1]."""
    arr = as_numpy(x, name)
    if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
        raise ValueError(f"`{name}` must hold probabilities in [0, 1]; apply a sigmoid to logits first.")
    return arr


def as_image_list(x: Any, name: str) -> list[Any]:
    """A sequence of per-image arrays (sizes may differ) from a list/tuple, or from a stacked array ``(N, ...)``."""
    if isinstance(x, (list, tuple)):
        return list(x)
    if hasattr(x, "shape") and len(x.shape) >= 1:
        return [x[i] for i in range(x.shape[0])]
    raise ValueError(f"`{name}` must be a sequence of per-image arrays or a stacked array (N, ...), got {type(x)}.")


def pool_masked(
    prob_maps: Any, labels: Any, masks: Any | None, prob_name: str = "prob_maps"
) -> tuple[np.ndarray, np.ndarray]:
    """Pool the pixels of several images inside their masks.

    Args:
        prob_maps: one array or a sequence of per-image arrays / a stacked array ``(N, *spatial)``.
        labels: binary arrays matching ``prob_maps``.
        masks: binary arrays matching ``prob_maps`` or None (all pixels).
        prob_name: name of the first argument in error messages.

    Returns:
        ``(scores, targets)``: 1-D float64 and bool arrays of the pooled pixels.
    """
    single = not isinstance(prob_maps, (list, tuple))
    probs: Sequence[Any] = [prob_maps] if single else prob_maps
    labs: Sequence[Any] = [labels] if single else as_image_list(labels, "labels")
    msks: Sequence[Any] | None = None if masks is None else ([masks] if single else as_image_list(masks, "masks"))
    if len(labs) != len(probs) or (msks is not None and len(msks) != len(probs)):
        raise ValueError(
            f"`{prob_name}` ({len(probs)} images), `labels` ({len(labs)}) and `masks` "
            f"({'-' if msks is None else len(msks)}) must hold the same number of images."
        )
    scores, targets = [], []
    for i, (p, y) in enumerate(zip(probs, labs, strict=True)):
        p_arr = as_probability(p, prob_name)
        y_arr = as_binary(y, "labels")
        if p_arr.shape != y_arr.shape:
            raise ValueError(f"image {i}: `{prob_name}` {p_arr.shape} and `labels` {y_arr.shape} differ in shape.")
        if msks is not None:
            m_arr = as_binary(msks[i], "masks")
            if m_arr.shape != p_arr.shape:
                raise ValueError(f"image {i}: `masks` {m_arr.shape} and `{prob_name}` {p_arr.shape} differ in shape.")
            p_arr, y_arr = p_arr[m_arr], y_arr[m_arr]
        scores.append(p_arr.ravel())
        targets.append(y_arr.ravel())
    return np.concatenate(scores), np.concatenate(targets)
