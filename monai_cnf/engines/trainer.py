"""FlowTrainer: MONAI's ``SupervisedTrainer`` for likelihood models (conditional flows and factored baselines)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.utils.enums import CommonKeys as Keys
from torch.optim import Optimizer

__all__ = ["FlowTrainer", "bits_per_dim_from_log_prob", "data_dependent_init", "needs_data_dependent_init"]

logger = logging.getLogger(__name__)

_INIT_FLAGS = ("initialised", "initialized")


def bits_per_dim_from_log_prob(log_prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Convert log-likelihoods in nats, shape ``(B,)``, to bits per dimension: ``-log p / (D ln 2)``.

    ``D`` is the number of elements of one target, ``C * prod(spatial)``.

    Args:
        log_prob: ``(B,)`` log-likelihoods in nats.
        target: ``(B, C, *spatial)`` the targets they belong to.

    Example:
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


class FlowTrainer(SupervisedTrainer):
    """A :class:`~monai.engines.SupervisedTrainer` that maximises a likelihood.

    One iteration computes, for ``model_kind``:

    - ``"flow"`` (a :class:`~monai_cnf.networks.ConditionalNormalizingFlow`): the bits/dim
      :math:`-\\log p(y \\mid x) / (D \\ln 2)` from ``network.log_prob(y, x)`` (the dequantization lower bound for
      discrete y), averaged over the batch; ``loss_function``, when given, is called as
      ``loss_function(log_prob, D)`` instead (e.g. ``FlowNLLLoss(units="bits")``);
    - ``"factored"`` (a :class:`~monai_cnf.networks.FactoredBaseline`): ``loss_function(logits, y)`` or
      ``loss_function(mean, log_scale, y)`` on ``network.head(x)``, e.g. the weighted cross-entropy
      ``WeightedBernoulliLoss(beta, normalize=False)`` or ``DiscretizedLogisticNLLLoss``.

    ``engine.state.output`` holds ``"image"``, ``"label"``, ``"loss"`` and, for flows, ``"bpd"`` (batch mean),
    so MONAI's ``StatsHandler`` / ``MLFlowHandler`` work with ``from_engine(["loss"], first=True)``.
    Layers with a data-dependent init (ActNorm, ``initialised`` buffer) are initialised with one no-grad
    ``log_prob`` on the first batch before the first optimiser step, and never again: a run resumed from a
    checkpoint restores the buffers (``CheckpointLoader`` runs at ``STARTED``, before the first iteration).

    Args:
        device: device of the run, e.g. ``"cpu"`` or ``torch.device("cuda")``.
        max_epochs: total number of epochs.
        train_data_loader: loader of dict batches with ``"image"`` and ``"label"``.
        network: the model.
        optimizer: the optimiser.
        loss_function: see above. Defaults to None (bits/dim for flows; required for ``"factored"``).
        model_kind: ``"auto"`` (``"factored"`` when the network has ``head`` and a loss is given, else ``"flow"``),
            ``"flow"`` or ``"factored"``. Defaults to ``"auto"``.
        clip_grad_norm: max global gradient norm (``torch.nn.utils.clip_grad_norm_``), None or <= 0 to disable.
            Defaults to None.
        amp: mixed precision on CUDA (``torch.autocast``; pass ``amp_kwargs={"dtype": torch.bfloat16}`` for bf16).
            Ignored (with a warning) on CPU. Defaults to False.
        kwargs: any other :class:`~monai.engines.SupervisedTrainer` argument (``epoch_length``, ``train_handlers``,
            ``key_train_metric``, ``amp_kwargs``, ``decollate``, ...).

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
        **kwargs: Any,
    ) -> None:
        if model_kind not in ("auto", "flow", "factored"):
            raise ValueError(f"model_kind must be 'auto', 'flow' or 'factored', got {model_kind!r}.")
        if model_kind == "auto":
            model_kind = "factored" if (loss_function is not None and hasattr(network, "head")) else "flow"
        if model_kind == "factored" and (loss_function is None or not hasattr(network, "head")):
            raise ValueError(
                "model_kind='factored' needs a network with a 'head' method and a loss_function "
                "(e.g. WeightedBernoulliLoss(beta, normalize=False)); pass both."
            )
        if model_kind == "flow" and not hasattr(network, "log_prob"):
            raise ValueError("model_kind='flow' needs a network with log_prob(y, x); pass a flow model.")
        device = torch.device(device)
        if amp and device.type != "cuda":
            logger.warning("amp=True is only used on CUDA; running in float32 on %s.", device)
            amp = False
        if max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1, got {max_epochs}.")
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function if loss_function is not None else _unused_loss,
            train_handlers=train_handlers,
            amp=amp,
            **kwargs,
        )
        self.model_kind = model_kind
        self.flow_loss = loss_function if model_kind == "flow" else None
        self.clip_grad_norm = clip_grad_norm if clip_grad_norm and clip_grad_norm > 0 else None
        self.data_init_done = False

    def _loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        net = self.network
        if self.model_kind == "factored":
            head = net.head(inputs)
            # logits -> loss(logits, y); (mean, log_scale) -> loss(mean, log_scale, y)
            loss = self.loss_function(*head, targets) if isinstance(head, tuple) else self.loss_function(head, targets)
            return loss.mean(), None
        log_prob = net.log_prob(targets, inputs).float()
        bpd = bits_per_dim_from_log_prob(log_prob, targets)
        if self.flow_loss is not None:  # e.g. FlowNLLLoss(units="bits"): loss(log_prob, num_dims)
            loss = self.flow_loss(log_prob, targets[0].numel()).mean()
        else:
            loss = bpd.mean()
        return loss, bpd.mean().detach()

    def _iteration(self, engine: FlowTrainer, batchdata: dict[str, torch.Tensor]) -> dict:  # type: ignore[override]
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        inputs, targets = batch[0], batch[1]
        if not engine.data_init_done:
            data_dependent_init(engine.network, inputs, targets)
            engine.data_init_done = True

        engine.state.output = {Keys.IMAGE: inputs, Keys.LABEL: targets}
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        use_scaler = engine.amp and engine.scaler is not None
        if use_scaler:
            with torch.autocast("cuda", **engine.amp_kwargs):
                loss, bpd = engine._loss(inputs, targets)
        else:
            loss, bpd = engine._loss(inputs, targets)
        engine.state.output[Keys.LOSS] = loss
        if bpd is not None:
            engine.state.output["bpd"] = bpd
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss {loss.item()} at iteration {engine.state.iteration}; lower the learning "
                "rate, set clip_grad_norm, or check the data range (binary labels in {0,1}, 8-bit targets 0..255)."
            )
        if use_scaler:
            engine.scaler.scale(loss).backward()
        else:
            loss.backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if engine.clip_grad_norm is not None:
            if use_scaler:
                engine.scaler.unscale_(engine.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(engine.network.parameters(), engine.clip_grad_norm)
            engine.state.output["grad_norm"] = norm.detach()
        if use_scaler:
            engine.scaler.step(engine.optimizer)
            engine.scaler.update()
        else:
            engine.optimizer.step()
        engine.state.output[Keys.LOSS] = loss.detach()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


def _unused_loss(*args: Any, **kwargs: Any) -> torch.Tensor:
    raise RuntimeError("FlowTrainer computes the flow loss itself; this placeholder is never called.")
