"""warmup_cosine: the LR factor by hand, its use in LambdaLR, and that a resumed run takes the configured schedule."""

from __future__ import annotations

import math

import pytest
import torch

from monai_cnf.engines import warmup_cosine


def test_factor_by_hand() -> None:
    f = warmup_cosine(warmup_steps=10, warmup_start_factor=0.1, decay_steps=20, decay_start=30, min_factor=0.05)
    assert f(0) == pytest.approx(0.1) and f(5) == pytest.approx(0.55) and f(10) == 1.0 and f(29) == 1.0
    assert f(30) == pytest.approx(1.0)
    assert f(35) == pytest.approx(0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * 0.25)))
    assert f(40) == pytest.approx(0.525) and f(50) == pytest.approx(0.05) and f(10_000) == pytest.approx(0.05)
    assert all(f(s) >= f(s + 1) for s in range(10, 60))  # non-increasing after the warm-up
    constant = warmup_cosine()  # the paper: constant learning rate
    assert {constant(s) for s in (0, 1, 10**6)} == {1.0}
    assert warmup_cosine(warmup_steps=4, decay_steps=4)(6) == pytest.approx(0.505)  # decay starts after warm-up


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"warmup_steps": -1}, "must be >= 0"),
        ({"min_factor": 0.0}, "min_factor"),
        ({"warmup_start_factor": 2}, "warmup_start_factor"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        warmup_cosine(**kwargs)


def test_resumed_scheduler_uses_the_configured_schedule() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    old = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine())  # trained at a constant rate
    for _ in range(100):
        opt.step()
        old.step()
    state = (opt.state_dict(), old.state_dict())

    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    new = torch.optim.lr_scheduler.LambdaLR(opt2, warmup_cosine(decay_steps=100, decay_start=100, min_factor=0.1))
    opt2.load_state_dict(state[0])
    new.load_state_dict(state[1])  # a function is not in the state: the new decay is kept
    for _ in range(50):
        opt2.step()
        new.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.55)
