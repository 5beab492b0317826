"""Learning-rate schedules for ``torch.optim.lr_scheduler.LambdaLR`` that the bundles' configs build."""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["warmup_cosine"]


def warmup_cosine(
    warmup_steps: int = 0,
    warmup_start_factor: float = 0.01,
    decay_steps: int = 0,
    decay_start: int | None = None,
    min_factor: float = 0.01,
) -> Callable[[int], float]:
    """The LR factor per optimiser step: linear warm-up, constant, then an optional cosine decay.

    ``factor(step)`` (``step`` counts optimiser steps from 0, as ``LambdaLR`` does):

    - ``step < warmup_steps``: linear from ``warmup_start_factor`` to 1;
    - then 1 (the paper's constant learning rate) until ``decay_start``;
    - with ``decay_steps > 0``: ``min_factor + (1 - min_factor) * (1 + cos(pi * t)) / 2`` with
      ``t = (step - decay_start) / decay_steps`` clipped to [0, 1], i.e. a half cosine from 1 to ``min_factor``,
      which then stays.

    It returns a plain function on purpose: ``LambdaLR.state_dict`` stores the attributes of callable *objects* and
    restores them over the configured ones on resume, so a schedule changed for a resumed run (e.g. a decay added to
    a run trained at a constant rate) would silently be replaced by the old one. Functions are not stored, so the
    schedule is always the one in the config, evaluated at the restored step.

    Args:
        warmup_steps: steps of linear warm-up. Defaults to 0 (none).
        warmup_start_factor: factor at step 0 of the warm-up. Defaults to 0.01.
        decay_steps: length of the cosine decay in steps; 0 disables it. Defaults to 0.
        decay_start: step at which the decay starts. Defaults to None (right after the warm-up).
        min_factor: factor at the end of the decay. Defaults to 0.01.

    Raises:
        ValueError: for negative step counts or factors outside (0, 1].

    Example:
        >>> f = warmup_cosine(warmup_steps=100, decay_steps=1000, decay_start=500, min_factor=0.1)
        >>> [round(f(s), 3) for s in (0, 50, 100, 500, 1000, 1500, 9999)]
        [0.01, 0.505, 1.0, 1.0, 0.55, 0.1, 0.1]
    """
    if warmup_steps < 0 or decay_steps < 0 or (decay_start is not None and decay_start < 0):
        raise ValueError(
            f"warmup_steps, decay_steps and decay_start must be >= 0, got {warmup_steps}, {decay_steps}, {decay_start}."
        )
    for name, value in (("warmup_start_factor", warmup_start_factor), ("min_factor", min_factor)):
        if not 0.0 < value <= 1.0:
            raise ValueError(f"{name} must be in (0, 1], got {value}.")
    start = warmup_steps if decay_start is None else decay_start

    def factor(step: int) -> float:
        if step < warmup_steps:
            return warmup_start_factor + (1.0 - warmup_start_factor) * step / warmup_steps
        if decay_steps == 0 or step < start:
            return 1.0
        t = min(1.0, (step - start) / decay_steps)
        return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * t))

    return factor
