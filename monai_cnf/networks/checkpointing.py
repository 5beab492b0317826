"""Activation checkpointing of a conditioner: its activations are recomputed in backward instead of kept.

The flow already recomputes its own activations (it is invertible); the conditioner (VGG, RRDB) is what holds most
of a training step's memory. ``torch.utils.checkpoint`` reruns the conditioner's forward during backward, which a
BatchNorm in training mode would count as a second batch: its running statistics would move twice per step. The
recompute here restores them, so a checkpointed model trains exactly as the plain one (same outputs, gradients and
running statistics; test).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["checkpointed"]


def _bn_buffers(module: nn.Module) -> list[tuple[Tensor, Tensor]]:
    """(buffer, saved copy) of every BatchNorm running statistic in ``module``."""
    saved = []
    for m in module.modules():
        if isinstance(m, _BatchNorm) and m.track_running_stats and m.training:
            for buf in (m.running_mean, m.running_var, m.num_batches_tracked):
                if buf is not None:
                    saved.append((buf, buf.detach().clone()))
    return saved


def checkpointed(module: nn.Module, x: Tensor) -> Any:
    """``module(x)`` whose activations are recomputed in backward (when it is training and gradients are on).

    Args:
        module: a network of one tensor input (a conditioner) returning a tensor or a list of tensors.
        x: its input.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        >>> x = torch.rand(2, 1, 8, 8, requires_grad=True)
        >>> checkpointed(net, x).sum().backward()
        >>> int(net[1].num_batches_tracked)  # the recompute in backward did not count a second batch
        1
    """
    if not (module.training and torch.is_grad_enabled()):
        return module(x)
    calls = {"n": 0}

    def run(inp: Tensor) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            return module(inp)
        saved = _bn_buffers(module)  # the recompute in backward: BatchNorm normalises as before, updates nothing
        try:
            return module(inp)
        finally:
            with torch.no_grad():
                for buf, value in saved:
                    buf.copy_(value)

    return torch.utils.checkpoint.checkpoint(run, x, use_reentrant=False)
