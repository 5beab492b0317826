"""FlowTrainer: MONAI's ``SupervisedTrainer`` for likelihood models (conditional flows and factored baselines)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.utils.enums import CommonKeys as Keys
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer

from monai_cnf.engines.distributed import all_reduce_mean, broadcast_module, is_distributed

__all__ = [
    "FlowObjective",
    "FlowTrainer",
    "amp_settings",
    "bits_per_dim_from_log_prob",
    "data_dependent_init",
    "needs_data_dependent_init",
]

logger = logging.getLogger(__name__)

_INIT_FLAGS = ("initialised", "initialized")


def bits_per_dim_from_log_prob(log_prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Convert log-likelihoods in nats, shape ``(B,)``, to bits per dimension: ``-log p / (D ln 2)``.

    ``D`` is the number of elements of one target, ``C * prod(spatial)``.

    Args:
        log_prob: ``(B,)`` log-likelihoods in nats.
        target: ``(B, C, *spatial)`` the targets they belong to.

    Example:
        >>> import math
        >>> bits_per_dim_from_log_prob(torch.tensor([-4 * math.log(2.0)]), torch.zeros(1, 1, 2, 2))
        tensor([1.])
    """
    from monai_cnf.metrics.likelihood import bits_per_dim  # the one definition

    return bits_per_dim(log_prob.float(), target[0].numel(), allow_nan=True)  # the trainer names a NaN loss itself


def _init_flags(network: torch.nn.Module) -> list[torch.Tensor]:
    return [buf for name, buf in network.named_buffers() if name.rsplit(".", 1)[-1] in _INIT_FLAGS]


def needs_data_dependent_init(network: torch.nn.Module) -> bool:
    """True when the network has data-dependently initialised layers (ActNorm) not initialised yet.

    Such layers keep a buffer named ``initialised`` (0 before, 1 after), so the flag survives ``state_dict``.
    """
    return any(not bool(flag.bool().all()) for flag in _init_flags(network))


def data_dependent_init(network: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> bool:
    """Run one no-grad ``log_prob`` pass so ActNorm layers initialise from this batch; no-op when already done.

    Args:
        network: a model with ``log_prob(y, x)``.
        inputs: ``(B, C_in, *spatial)`` conditioning images x.
        targets: ``(B, C_out, *spatial)`` targets y.

    Returns:
        True when an initialisation pass ran.
    """
    if not needs_data_dependent_init(network) or not hasattr(network, "log_prob"):
        return False
    was_training = network.training
    network.train()
    with torch.no_grad():
        network.log_prob(targets, inputs)
    network.train(was_training)
    if needs_data_dependent_init(network):
        logger.warning("data-dependent initialisation ran but some 'initialised' buffers are still 0.")
    else:
        logger.info("data-dependent (ActNorm) initialisation done on the first batch.")
    return True


class FlowObjective(torch.nn.Module):
    """The training pass of a likelihood model as a ``forward``, so that ``DistributedDataParallel`` can wrap it.

    A model's own ``forward(x)`` is its temperature-0 prediction (what MONAI inferers call); training needs
    ``log_prob(y, x)`` (flows) or ``head(x)`` (factored baselines). DDP synchronises gradients only for what goes
    through the wrapped module's ``forward``, so the multi-GPU overlays wrap ``FlowObjective(network)`` in DDP and
    keep ``network`` itself plain: checkpoints, validation and inference use it unchanged (no ``module.`` prefix,
    no collective inside a rank's own validation pass). The objective holds no parameters of its own.

    Args:
        network: a model with ``log_prob(y, x)`` and, for the factored path, ``head(x)``.

    Example:
        >>> from monai_cnf.networks import ConditionalNormalizingFlow
        >>> model = ConditionalNormalizingFlow(spatial_dims=2, in_channels=1, out_channels=1, num_levels=1,
        ...     num_steps=1, hidden_channels=8, dequantization="none", conditioner_kwargs={"feature_channels": (4,)})
        >>> x, y = torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8)
        >>> FlowObjective(model)(x, y).shape        # log p(y | x) in nats, (B,)
        torch.Size([2])
    """

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor, output: str = "log_prob") -> Any:
        """``output="log_prob"``: ``network.log_prob(targets, inputs)``, ``(B,)`` nats in float32;
        ``output="head"``: ``network.head(inputs)`` (logits, or ``(mean, log_scale)``), float16/bfloat16 cast to
        float32."""
        if output == "log_prob":
            return self.network.log_prob(targets, inputs).float()
        if output == "head":
            head = self.network.head(inputs)
            return tuple(_full(h) for h in head) if isinstance(head, tuple) else _full(head)
        raise ValueError(f"output must be 'log_prob' or 'head', got {output!r}.")


def amp_settings(device: str | torch.device, amp: bool, dtype: torch.dtype | str | None = None) -> dict[str, Any]:
    """How a run uses mixed precision: ``{"enabled", "device_type", "dtype", "scaler"}``.

    CUDA: bfloat16 where the GPU supports it (no loss scaling needed), else float16 with a ``GradScaler``. CPU:
    bfloat16 autocast (what the CPU tests exercise; rarely faster than float32 on CPUs without AMX). ``dtype``
    forces one (``"bfloat16"`` / ``"float16"``).

    Example:
        >>> s = amp_settings("cpu", True); s["enabled"], s["dtype"], s["scaler"]
        (True, torch.bfloat16, False)
        >>> amp_settings("cpu", False)["enabled"]
        False
    """
    device = torch.device(device)
    if isinstance(dtype, str):
        if dtype not in ("bfloat16", "float16"):
            raise ValueError(f"amp dtype must be 'bfloat16' or 'float16', got {dtype!r}.")
        dtype = getattr(torch, dtype)
    if dtype is None:
        bf16 = device.type != "cuda" or torch.cuda.is_bf16_supported()
        dtype = torch.bfloat16 if bf16 else torch.float16
    if dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"amp dtype must be torch.bfloat16 or torch.float16, got {dtype}.")
    if amp and device.type == "cpu" and dtype == torch.float16:
        raise ValueError("float16 autocast needs CUDA; use dtype bfloat16 on CPU.")
    return {
        "enabled": bool(amp),
        "device_type": device.type,
        "dtype": dtype,
        "scaler": bool(amp) and dtype == torch.float16,
    }


class FlowTrainer(SupervisedTrainer):
    """A :class:`~monai.engines.SupervisedTrainer` that maximises a likelihood, in one process or data-parallel.

    One iteration computes, for ``model_kind``:

    - ``"flow"`` (a :class:`~monai_cnf.networks.ConditionalNormalizingFlow`): the bits/dim
      :math:`-\\log p(y \\mid x) / (D \\ln 2)` from ``network.log_prob(y, x)`` (the dequantization lower bound for
      discrete y), averaged over the batch; ``loss_function``, when given, is called as
      ``loss_function(log_prob, D)`` instead (e.g. ``FlowNLLLoss(units="bits")``);
    - ``"factored"`` (a :class:`~monai_cnf.networks.FactoredBaseline`): ``loss_function(logits, y)`` or
      ``loss_function(mean, log_scale, y)`` on ``network.head(x)``, e.g. the weighted cross-entropy
      ``WeightedBernoulliLoss(beta, normalize=False)`` or ``DiscretizedLogisticNLLLoss``.

    Both go through the ``forward`` of a :class:`FlowObjective`. For data-parallel training pass
    ``DistributedDataParallel(FlowObjective(network))`` as ``network`` (the bundles' ``multi_gpu_train.json`` does):
    gradients are then all-reduced by DDP, the logged loss is the mean over the ranks (the loss of the global
    batch), a non-finite loss on any rank stops every rank, and ActNorm's data-dependent init uses the statistics of
    the global first batch, after which rank 0's weights are broadcast so every rank starts from one copy.

    ``engine.state.output`` holds ``"image"``, ``"label"``, ``"loss"`` and, for flows, ``"bpd"`` (batch mean),
    so MONAI's ``StatsHandler`` / ``MLFlowHandler`` work with ``from_engine(["loss"], first=True)``.
    Layers with a data-dependent init (ActNorm, ``initialised`` buffer) are initialised with one no-grad
    ``log_prob`` on the first batch before the first optimiser step, and never again: a run resumed from a
    checkpoint restores the buffers (``CheckpointLoader`` runs at ``STARTED``, before the first iteration).

    With ``amp``, the forward runs under ``torch.autocast`` (see :func:`amp_settings`: bfloat16 where supported,
    float16 with a ``GradScaler`` otherwise); the models keep their flow, log-determinants, prior and dequantizer
    log-densities in float32 (only the conditioner runs in low precision), and the loss is float32. On CUDA,
    TF32 matmuls and convolutions are switched on (``tf32``).

    Args:
        device: device of the run, e.g. ``"cpu"`` or ``torch.device("cuda")``.
        max_epochs: total number of epochs.
        train_data_loader: loader of dict batches with ``"image"`` and ``"label"``.
        network: the model, or ``DistributedDataParallel(FlowObjective(model))`` for data-parallel training.
        optimizer: the optimiser.
        loss_function: see above. Defaults to None (bits/dim for flows; required for ``"factored"``).
        model_kind: ``"auto"`` (``"factored"`` when the network has ``head`` and a loss is given, else ``"flow"``),
            ``"flow"`` or ``"factored"``. Defaults to ``"auto"``.
        clip_grad_norm: max global gradient norm (``torch.nn.utils.clip_grad_norm_``), None or <= 0 to disable.
            Defaults to None.
        amp: mixed precision (``torch.autocast``). Defaults to False.
        amp_dtype: ``"bfloat16"`` or ``"float16"`` to force one; None picks (see :func:`amp_settings`).
            Defaults to None.
        tf32: allow TF32 matmuls/convolutions on CUDA. Defaults to True.
        kwargs: any other :class:`~monai.engines.SupervisedTrainer` argument (``epoch_length``, ``train_handlers``,
            ``key_train_metric``, ``decollate``, ...).

    Example:
        >>> # trainer = FlowTrainer("cpu", 10, loader, model, torch.optim.Adam(model.parameters(), 1e-3))
        >>> # trainer.run()
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        network: torch.nn.Module,
        optimizer: Optimizer,
        loss_function: Callable | None = None,
        model_kind: str = "auto",
        clip_grad_norm: float | None = None,
        amp: bool = False,
        train_handlers: Sequence | None = None,
        amp_dtype: str | torch.dtype | None = None,
        tf32: bool = True,
        **kwargs: Any,
    ) -> None:
        if model_kind not in ("auto", "flow", "factored"):
            raise ValueError(f"model_kind must be 'auto', 'flow' or 'factored', got {model_kind!r}.")
        objective, model = _objective_and_model(network)
        if model_kind == "auto":
            model_kind = "factored" if (loss_function is not None and hasattr(model, "head")) else "flow"
        if model_kind == "factored" and (loss_function is None or not hasattr(model, "head")):
            raise ValueError(
                "model_kind='factored' needs a network with a 'head' method and a loss_function "
                "(e.g. WeightedBernoulliLoss(beta, normalize=False)); pass both."
            )
        if model_kind == "flow" and not hasattr(model, "log_prob"):
            raise ValueError("model_kind='flow' needs a network with log_prob(y, x); pass a flow model.")
        device = torch.device(device)
        if max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1, got {max_epochs}.")
        kwargs.pop("amp_kwargs", None)  # autocast is configured by amp / amp_dtype (see amp_settings)
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function if loss_function is not None else _unused_loss,
            train_handlers=train_handlers,
            amp=False,  # MONAI's own AMP path is not used: autocast and scaler are set up below
            **kwargs,
        )
        self.model = model
        self.objective = objective
        self.model_kind = model_kind
        self.flow_loss = loss_function if model_kind == "flow" else None
        self.clip_grad_norm = clip_grad_norm if clip_grad_norm and clip_grad_norm > 0 else None
        self.data_init_done = False
        self.amp_settings = amp_settings(device, amp, amp_dtype)
        # MONAI's Trainer.run() replaces `scaler` when `amp` is set: keep both off and use our own scaler
        self.grad_scaler = torch.amp.GradScaler(device.type) if self.amp_settings["scaler"] else None
        if device.type == "cuda" and tf32:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    def _autocast(self) -> Any:
        s = self.amp_settings
        return torch.autocast(s["device_type"], dtype=s["dtype"], enabled=s["enabled"])

    def _loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.model_kind == "factored":
            with self._autocast():
                head = self.objective(inputs, targets, output="head")
            # logits -> loss(logits, y); (mean, log_scale) -> loss(mean, log_scale, y); float32, outside autocast
            loss = self.loss_function(*head, targets) if isinstance(head, tuple) else self.loss_function(head, targets)
            return loss.mean(), None
        with self._autocast():
            log_prob = self.objective(inputs, targets, output="log_prob")
        log_prob = log_prob.float()
        bpd = bits_per_dim_from_log_prob(log_prob, targets)
        if self.flow_loss is not None:  # e.g. FlowNLLLoss(units="bits"): loss(log_prob, num_dims)
            loss = self.flow_loss(log_prob, targets[0].numel()).mean()
        else:
            loss = bpd.mean()
        return loss, bpd.mean().detach()

    def _data_init(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        """ActNorm init on the first batch (global-batch statistics under DDP), then one copy of rank 0's weights."""
        ran = data_dependent_init(self.model, inputs, targets)
        if ran and is_distributed():
            broadcast_module(self.model, src=0)
        self.data_init_done = True

    def _iteration(self, engine: FlowTrainer, batchdata: dict[str, torch.Tensor]) -> dict:  # type: ignore[override]
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        inputs, targets = batch[0], batch[1]
        if not engine.data_init_done:
            engine._data_init(inputs, targets)

        engine.state.output = {Keys.IMAGE: inputs, Keys.LABEL: targets}
        engine.objective.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        loss, bpd = engine._loss(inputs, targets)
        # the mean over the ranks: the loss of the global batch; also makes every rank agree on stopping below
        loss_all = all_reduce_mean(loss.detach())
        engine.state.output[Keys.LOSS] = loss_all
        if bpd is not None:
            engine.state.output["bpd"] = all_reduce_mean(bpd)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        if not torch.isfinite(loss_all):
            raise FloatingPointError(
                f"non-finite training loss {loss_all.item()} at iteration {engine.state.iteration}; lower the "
                "learning rate, set clip_grad_norm, or check the data range (binary labels in {0,1}, 8-bit targets "
                "0..255)."
            )
        scaler = engine.grad_scaler
        if scaler is not None:
            scaler.scale(loss).backward()
        else:
            loss.backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if engine.clip_grad_norm is not None:
            if scaler is not None:
                scaler.unscale_(engine.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(engine.model.parameters(), engine.clip_grad_norm)
            engine.state.output["grad_norm"] = norm.detach()
        if scaler is not None:
            scaler.step(engine.optimizer)
            scaler.update()
        else:
            engine.optimizer.step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _objective_and_model(network: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(what the trainer calls, the model itself)`` for a plain model or ``DDP(FlowObjective(model))``."""
    if isinstance(network, DistributedDataParallel):
        inner = network.module
        if not isinstance(inner, FlowObjective):
            raise ValueError(
                "DistributedDataParallel must wrap FlowObjective(model), not the model: the model's forward is its "
                "temperature-0 prediction, so DDP would not synchronise the training gradients. Use "
                "DistributedDataParallel(FlowObjective(network)) (as configs/multi_gpu_train.json does)."
            )
        return network, inner.network
    if isinstance(network, FlowObjective):
        return network, network.network
    return FlowObjective(network), network


def _unused_loss(*args: Any, **kwargs: Any) -> torch.Tensor:
    raise RuntimeError("FlowTrainer computes the flow loss itself; this placeholder is never called.")
