"""Data-parallel training with PyTorch's own engine (``torch.distributed``, launched by ``torchrun``).

The bundles' ``multi_gpu_train.json`` / ``multi_gpu_evaluate.json`` overlays call these helpers:

- :func:`init_distributed` / :func:`destroy_distributed`: the process group in ``initialize`` / ``finalize``
  (``nccl`` on CUDA, ``gloo`` on CPU), from the environment that ``torchrun`` sets (``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``);
- :func:`local_device`: ``cuda:<LOCAL_RANK>`` for a CUDA run (one GPU per process), else the device itself;
- :func:`is_main_process` / :func:`main_process_only`: rank 0 alone writes checkpoints, logs and MLflow;
- :func:`broadcast_module`: one copy of the weights for every rank (after ActNorm's data-dependent init);
- :class:`GatheredMetric` / :func:`gather_metrics`: validation sharded with a ``DistributedSampler``, each metric's
  state summed or concatenated over the ranks before ``compute``, so every rank computes the same value and agrees
  on the best model.

Every helper is a no-op (or the identity) in a single process, so one code path serves both.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from ignite.metrics import Metric

__all__ = [
    "GatheredMetric",
    "all_reduce_mean",
    "broadcast_module",
    "destroy_distributed",
    "gather_metrics",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "local_device",
    "main_process_first",
    "main_process_only",
]


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """Global rank (0 outside a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """Number of processes (1 outside a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0 (and in a single process): the one process that writes checkpoints, logs and MLflow."""
    return get_rank() == 0


@contextmanager
def main_process_first() -> Iterator[None]:
    """Run the block on rank 0 first, then on the other ranks (e.g. generate a dataset once, then read it).

    Every rank of the process group must enter it; in one process it just runs the block.
    """
    if not is_distributed():
        yield
        return
    if not is_main_process():
        dist.barrier()
    try:
        yield
    finally:
        if is_main_process():
            dist.barrier()


def _writer_types() -> tuple[type, ...]:
    from monai.handlers import CheckpointSaver, MetricsSaver, MLFlowHandler, StatsHandler, TensorBoardHandler

    from monai_cnf.engines.progress import RichProgressHandler
    from monai_cnf.tracking.models import MLflowModelHandler

    return (
        CheckpointSaver, MLFlowHandler, MetricsSaver, StatsHandler, TensorBoardHandler, RichProgressHandler,
        MLflowModelHandler,
    )  # fmt: skip


def main_process_only(handlers: Sequence[Any] | None) -> list[Any] | None:
    """The handlers this process attaches: all of them on rank 0; on other ranks, all but those that write
    (checkpoint savers, MLflow runs and models, metrics savers, stats logs, TensorBoard, progress bars).

    Handlers that read or compute (``CheckpointLoader``, ``ValidationHandler``, ``LrScheduleHandler``) run on every
    rank, so a resumed run restores every rank and all ranks step their schedules alike. None stays None.

    Example:
        >>> from monai.handlers import LrScheduleHandler, StatsHandler
        >>> [type(h).__name__ for h in main_process_only([StatsHandler()])]  # one process: rank 0
        ['StatsHandler']
    """
    if handlers is None:
        return None
    if is_main_process():
        return list(handlers)
    writers = _writer_types()
    return [h for h in handlers if not isinstance(h, writers)]


def local_device(device: str | torch.device) -> torch.device:
    """The device of this process: ``cuda:<LOCAL_RANK>`` for a CUDA device (one GPU per process), else ``device``.

    Example:
        >>> local_device("cpu")
        device(type='cpu')
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def init_distributed(device: str | torch.device, timeout_s: float | None = None) -> bool:
    """Join the process group that ``torchrun`` describes in the environment; no-op if already joined.

    Args:
        device: the run's device; ``nccl`` for CUDA (and ``torch.cuda.set_device(LOCAL_RANK)``), ``gloo`` otherwise.
        timeout_s: collective timeout in seconds. Defaults to None (torch's default).

    Returns:
        True once the process belongs to a process group.

    Raises:
        RuntimeError: when the launcher's variables are missing (not started by ``torchrun``).
    """
    if dist.is_initialized():
        return True
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(
            f"the multi-GPU configs need torchrun's environment ({', '.join(missing)} unset): launch with "
            "`torchrun --nproc_per_node=N -m monai.bundle run --config_file \"['configs/train.json',"
            "'configs/multi_gpu_train.json']\"` or `cnf train BUNDLE --nproc-per-node N`."
        )
    device = local_device(device)
    kwargs: dict[str, Any] = {}
    if timeout_s is not None:
        from datetime import timedelta

        kwargs["timeout"] = timedelta(seconds=float(timeout_s))
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl", device_id=device, **kwargs)
    else:
        dist.init_process_group(backend="gloo", **kwargs)
    return True


def destroy_distributed(exit_worker: bool = False) -> None:
    """Leave the process group (``finalize``) once every rank has got here; no-op outside one.

    The barrier matters: rank 0 may still be writing (the final checkpoint, the MLflow model) when the other ranks
    finish. A rank that tears down its gloo group while a peer is still connected aborts
    ("terminate called without an active exception"), and torchrun then kills rank 0 mid-write.

    Args:
        exit_worker: on ranks > 0, end the process right here (``os._exit(0)``, after flushing stdout/stderr).
            Even after the barrier and ``destroy_process_group``, a worker can still abort in C++ while the
            interpreter tears down (the DDP reducer and gloo's threads outlive the group; seen in CI and twice in
            local runs of the SR torchrun test); such a worker has nothing left to write, so the bundles'
            multi-GPU ``finalize`` skips that teardown. Rank 0 exits normally. Defaults to False.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    rank, world = dist.get_rank(), dist.get_world_size()
    if world > 1:
        dist.barrier()
    dist.destroy_process_group()
    if exit_worker and world > 1 and rank > 0:
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


@torch.no_grad()
def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy ``src``'s parameters and buffers into every rank's ``module``, in place; no-op in one process."""
    if not is_distributed():
        return
    for tensor in module.state_dict(keep_vars=True).values():
        data = tensor.data if isinstance(tensor, torch.nn.Parameter) else tensor
        dist.broadcast(data, src=src)


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over the ranks (a new tensor; the input itself in one process)."""
    if not is_distributed():
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


class GatheredMetric(Metric):
    """An ignite metric computed over every rank's shard of the data.

    The wrapped metric declares its state in ``distributed_state``: a mapping of attribute name to ``"sum"``
    (numbers, summed over the ranks) or ``"cat"`` (lists of tensors, concatenated in rank order). Before the wrapped
    ``compute``, that state is reduced so every rank holds the state of the whole dataset; in one process the wrapper
    changes nothing. With ``DistributedSampler(even_divisible=False)`` each item is seen exactly once.

    Args:
        metric: an ignite ``Metric`` with ``distributed_state`` (e.g. :class:`~monai_cnf.engines.BitsPerDim`,
            :class:`~monai_cnf.engines.MaxFScoreMetric`, :class:`~monai_cnf.engines.PSNRY`).

    Example:
        >>> from monai_cnf.engines import BitsPerDim
        >>> m = GatheredMetric(BitsPerDim()); m.reset(); m.update(torch.tensor([1.0, 3.0])); m.compute()
        2.0
    """

    def __init__(self, metric: Metric) -> None:
        state = getattr(metric, "distributed_state", None)
        if not isinstance(state, Mapping) or not set(state.values()) <= {"sum", "cat"}:
            raise ValueError(
                f"{type(metric).__name__} declares no `distributed_state` ({{attribute: 'sum' | 'cat'}}); add it to "
                "the metric class so its state can be reduced over the ranks."
            )
        self.metric = metric
        self.state_kinds = dict(state)
        super().__init__(output_transform=metric._output_transform, device=metric._device)

    def reset(self) -> None:
        self.metric.reset()

    def update(self, output: Any) -> None:
        self.metric.update(output)

    def compute(self) -> Any:
        if is_distributed():
            self._reduce_state()
        return self.metric.compute()

    def _reduce_state(self) -> None:
        local = {name: getattr(self.metric, name) for name in self.state_kinds}
        gathered: list[dict[str, Any]] = [{} for _ in range(dist.get_world_size())]
        dist.all_gather_object(gathered, {k: _to_cpu(v) for k, v in local.items()})
        for name, kind in self.state_kinds.items():
            values = [g[name] for g in gathered]
            setattr(self.metric, name, sum(values) if kind == "sum" else [t for v in values for t in v])


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    return value


def gather_metrics(metrics: Mapping[str, Metric] | None) -> dict[str, Metric] | None:
    """Wrap each metric of a ``{name: metric}`` mapping in :class:`GatheredMetric` (for ``key_val_metric`` and
    ``additional_metrics`` of a sharded evaluator); None stays None."""
    if metrics is None:
        return None
    return {name: m if isinstance(m, GatheredMetric) else GatheredMetric(m) for name, m in metrics.items()}
