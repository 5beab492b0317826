"""A Rich progress bar as an ignite handler (per-epoch bar with the running loss / bits per dim)."""

from __future__ import annotations

import math
from typing import Any

import torch
from ignite.engine import Engine, Events

__all__ = ["RichProgressHandler"]


def _scalar(value: Any) -> float | None:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.detach())
    if isinstance(value, (int, float)):
        return float(value)
    return None


class RichProgressHandler:
    """Show one Rich progress bar per epoch for a trainer or evaluator, with the last scalar outputs.

    Reads ``engine.state.output`` (a dict, or a decollated list whose first item holds the scalars) and shows the
    keys in ``keys`` that are scalars. ``disable=True`` (or a non-terminal console without ``force``) keeps the
    run quiet; the bar never changes training.

    Args:
        description: label in front of the bar. Defaults to ``"train"``.
        keys: output keys shown next to the bar. Defaults to ``("loss", "bpd")``.
        disable: do nothing. Defaults to False.
        transient: remove the bar when the epoch ends. Defaults to False.
        console: a ``rich.console.Console`` to draw on. Defaults to None (Rich's global console).

    Example:
        >>> # RichProgressHandler("train").attach(trainer)
    """

    def __init__(
        self,
        description: str = "train",
        keys: tuple[str, ...] | list[str] = ("loss", "bpd"),
        disable: bool = False,
        transient: bool = False,
        console: Any = None,
    ) -> None:
        self.description = description
        self.keys = tuple(keys)
        self.disable = bool(disable)
        self.transient = bool(transient)
        self.console = console
        self._progress: Any = None
        self._task: Any = None

    def attach(self, engine: Engine) -> None:
        if self.disable:
            return
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._close)
        engine.add_event_handler(Events.COMPLETED, self._close)
        engine.add_event_handler(Events.TERMINATE, self._close)
        # no EXCEPTION_RAISED handler: ignite stops re-raising once one is registered

    def _epoch_started(self, engine: Engine) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._close(engine)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[stats]}"),
            transient=self.transient,
            console=self.console,
        )
        self._progress.start()
        total = engine.state.epoch_length
        epochs = engine.state.max_epochs
        desc = f"{self.description} {engine.state.epoch}/{epochs}" if epochs and epochs > 1 else self.description
        self._task = self._progress.add_task(desc, total=total, stats="")

    def _iteration_completed(self, engine: Engine) -> None:
        if self._progress is None:
            return
        out = engine.state.output
        if isinstance(out, list) and out and isinstance(out[0], dict):
            out = out[0]
        stats = []
        if isinstance(out, dict):
            for k in self.keys:
                v = _scalar(out.get(k))
                if v is not None and math.isfinite(v):
                    stats.append(f"{k}={v:.4g}")
        self._progress.update(self._task, advance=1, stats=" ".join(stats))

    def _close(self, engine: Engine) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
