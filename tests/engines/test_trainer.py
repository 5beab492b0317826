"""FlowTrainer: the loss it optimises, the one-time data-dependent init, clipping, the factored path."""

from __future__ import annotations

import math

import pytest
import torch
from ignite.engine import Events
from torch.utils.data import DataLoader

from monai_cnf.engines import FlowTrainer, bits_per_dim_from_log_prob, needs_data_dependent_init


def _loader(data: list, batch_size: int = 4) -> DataLoader:
    return DataLoader(data, batch_size=batch_size, shuffle=False)


def test_bits_per_dim_formula() -> None:
    lp = torch.tensor([-8 * math.log(2.0), -16 * math.log(2.0)])
    # D = 1 * 2 * 4 = 8 elements: 1 and 2 bits per element
    assert torch.allclose(bits_per_dim_from_log_prob(lp, torch.zeros(2, 1, 2, 4)), torch.tensor([1.0, 2.0]))


def test_flow_loss_is_bits_per_dim_and_init_runs_once(tiny_flow, tiny_data) -> None:
    seen = []
    trainer = FlowTrainer(
        "cpu", 2, _loader(tiny_data), tiny_flow, torch.optim.SGD(tiny_flow.parameters(), lr=0.0), decollate=False
    )

    @trainer.on(Events.ITERATION_COMPLETED)
    def _record(engine):
        seen.append((engine.state.output["loss"].item(), engine.state.output["bpd"].item()))

    trainer.run()
    assert tiny_flow.init_calls == 1  # once, before the first step, never again
    assert tiny_flow.init_grad_enabled is False  # the init pass runs under no_grad
    # the init used the first batch's label mean
    first = torch.stack([d["label"] for d in tiny_data[:4]])
    assert tiny_flow.act_bias.item() == pytest.approx(first.mean().item(), rel=1e-6)
    # lr = 0: parameters fixed, so each loss equals the independently computed bits/dim of its batch
    tiny_flow.eval()
    for i, (loss, bpd) in enumerate(seen[:4]):
        batch = tiny_data[4 * i : 4 * i + 4]
        x = torch.stack([d["image"] for d in batch])
        y = torch.stack([d["label"] for d in batch])
        s = tiny_flow.log_s.exp()
        mu = tiny_flow.mu(x)
        nll = (0.5 * ((y - mu) / s) ** 2 + tiny_flow.log_s + 0.5 * math.log(2 * math.pi)).sum((1, 2, 3))
        expected = (nll / (16 * math.log(2.0))).mean().item()
        assert loss == pytest.approx(expected, rel=1e-5)
        assert bpd == pytest.approx(expected, rel=1e-5)
    assert trainer.state.epoch == 2 and trainer.state.iteration == 8


def test_no_init_when_already_initialised(tiny_flow, tiny_data) -> None:
    tiny_flow.initialized.fill_(True)
    tiny_flow.act_bias.fill_(0.25)
    assert not needs_data_dependent_init(tiny_flow)
    FlowTrainer("cpu", 1, _loader(tiny_data), tiny_flow, torch.optim.SGD(tiny_flow.parameters(), lr=0.0)).run()
    assert tiny_flow.init_calls == 0 and tiny_flow.act_bias.item() == 0.25


def test_training_learns(tiny_flow, tiny_data) -> None:
    losses = []
    trainer = FlowTrainer("cpu", 30, _loader(tiny_data), tiny_flow, torch.optim.Adam(tiny_flow.parameters(), lr=0.05))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: losses.append(float(e.state.output[0]["loss"])))
    trainer.run()
    # data: y = 2x + 0.5 + N(0, 0.1^2): the slope is learned and bits/dim fall by > 1 bit
    assert losses[-1] < losses[0] - 1.0
    assert tiny_flow.w.item() > 1.0


def test_grad_clipping_bounds_the_step(tiny_flow, tiny_data) -> None:
    tiny_flow.initialized.fill_(True)
    before = torch.cat([p.detach().clone().flatten() for p in tiny_flow.parameters()])
    data = tiny_data[:4]
    trainer = FlowTrainer(
        "cpu", 1, _loader(data), tiny_flow, torch.optim.SGD(tiny_flow.parameters(), lr=1.0), clip_grad_norm=1e-3
    )
    trainer.run()
    after = torch.cat([p.detach().flatten() for p in tiny_flow.parameters()])
    # SGD lr=1: the step is minus the clipped gradient, whose norm is exactly the clip value
    assert (after - before).norm().item() == pytest.approx(1e-3, rel=1e-4)


class _Factored(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 1)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    def log_prob(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the factored path must train on head(), not log_prob")


def test_factored_path_uses_head_and_loss(tiny_data) -> None:
    net = _Factored()
    data = [{"image": d["image"], "label": (d["label"] > 1.5).float()} for d in tiny_data[:4]]
    seen = []
    trainer = FlowTrainer(
        "cpu",
        1,
        _loader(data),
        net,
        torch.optim.SGD(net.parameters(), lr=0.0),
        loss_function=torch.nn.BCEWithLogitsLoss(),
    )
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(float(e.state.output[0]["loss"])))
    assert trainer.model_kind == "factored"
    trainer.run()
    x = torch.stack([d["image"] for d in data])
    y = torch.stack([d["label"] for d in data])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(net.conv(x), y).item()
    assert seen[0] == pytest.approx(expected, rel=1e-6)


def test_bad_arguments(tiny_flow, tiny_data) -> None:
    opt = torch.optim.SGD(tiny_flow.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="model_kind"):
        FlowTrainer("cpu", 1, _loader(tiny_data), tiny_flow, opt, model_kind="gan")
    with pytest.raises(ValueError, match="head"):
        FlowTrainer("cpu", 1, _loader(tiny_data), tiny_flow, opt, model_kind="factored")


def test_non_finite_loss_raises_clear_error(tiny_flow, tiny_data) -> None:
    data = [{"image": d["image"], "label": d["label"] * float("nan")} for d in tiny_data[:4]]
    trainer = FlowTrainer("cpu", 1, _loader(data), tiny_flow, torch.optim.SGD(tiny_flow.parameters(), lr=0.1))
    with pytest.raises(FloatingPointError, match="non-finite training loss"):
        trainer.run()
