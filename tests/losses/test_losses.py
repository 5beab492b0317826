"""Loss classes: reductions, units, shape checks, values against the functional forms."""

from __future__ import annotations

import math

import pytest
import torch

from monai_cnf.losses import DiscretizedLogisticNLLLoss, FlowNLLLoss, WeightedBernoulliLoss


def test_flow_nll_units_and_reduction() -> None:
    log_prob = torch.tensor([-math.log(2.0) * 8, -math.log(2.0) * 16])
    assert float(FlowNLLLoss()(log_prob, 8)) == pytest.approx(1.5)  # 1 and 2 bits/dim
    torch.testing.assert_close(FlowNLLLoss(reduction="none")(log_prob, torch.tensor([8, 4])), torch.tensor([1.0, 4.0]))
    assert float(FlowNLLLoss(reduction="sum")(log_prob, 8)) == pytest.approx(3.0)
    nats = FlowNLLLoss(units="nats", reduction="none")
    torch.testing.assert_close(nats(log_prob), -log_prob)
    torch.testing.assert_close(nats(log_prob, 8), -log_prob / 8)


def test_flow_nll_bad_input() -> None:
    with pytest.raises(ValueError, match="units"):
        FlowNLLLoss(units="bpd")
    with pytest.raises(ValueError, match="num_dims"):
        FlowNLLLoss()(torch.zeros(2))
    with pytest.raises(ValueError, match="log_prob"):
        FlowNLLLoss()(torch.zeros(2, 3), 3)
    with pytest.raises(ValueError, match="num_dims"):
        FlowNLLLoss()(torch.zeros(2), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="reduction"):
        FlowNLLLoss(reduction="avg")


def test_weighted_bernoulli_loss_values() -> None:
    logits = torch.zeros(1, 1, 2, 2)
    y = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    # numerator only: -(0.9 log .5) once, -(0.1 log .5) three times, mean over 4 elements
    wce = WeightedBernoulliLoss(beta=0.9, normalize=False)
    assert float(wce(logits, y)) == pytest.approx((0.9 + 3 * 0.1) * math.log(2) / 4, rel=1e-6)
    # normalised: each pixel adds log(0.5**0.9 + 0.5**0.1)
    full = WeightedBernoulliLoss(beta=0.9, reduction="sum")
    expected = (0.9 + 3 * 0.1) * math.log(2) + 4 * math.log(0.5**0.9 + 0.5**0.1)
    assert float(full(logits, y)) == pytest.approx(expected, rel=1e-6)
    assert WeightedBernoulliLoss(reduction="none")(logits, y).shape == y.shape
    # beta None == BCE with logits
    logits = torch.randn(2, 1, 3, 3)
    y = (torch.rand(2, 1, 3, 3) > 0.5).float()
    torch.testing.assert_close(
        WeightedBernoulliLoss()(logits, y), torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
    )


def test_weighted_bernoulli_loss_bad_input() -> None:
    with pytest.raises(ValueError, match="logits"):
        WeightedBernoulliLoss()(torch.zeros(1, 2, 2, 2), torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match="target"):
        WeightedBernoulliLoss()(torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.3))
    with pytest.raises(ValueError, match="beta"):
        WeightedBernoulliLoss(beta=-0.1)


def test_discretized_logistic_loss() -> None:
    y = torch.tensor([[[[0.0, 255.0], [10.0, 11.0]]]])
    mu = torch.tensor([[[[0.0, 255.0], [10.0, 10.0]]]])
    ls = torch.zeros_like(mu)
    per = DiscretizedLogisticNLLLoss(reduction="none")(mu, ls, y)
    sig = torch.sigmoid
    # by hand: edges -log sigmoid(0.5); centre bin -log(sig(.5) - sig(-.5)); next bin -log(sig(1.5) - sig(.5))
    expected = -torch.log(
        torch.tensor(
            [[[[sig(torch.tensor(0.5)), sig(torch.tensor(0.5))],
               [sig(torch.tensor(0.5)) - sig(torch.tensor(-0.5)), sig(torch.tensor(1.5)) - sig(torch.tensor(0.5))]]]]
        )
    )  # fmt: skip
    torch.testing.assert_close(per, expected, rtol=1e-5, atol=1e-6)
    assert float(DiscretizedLogisticNLLLoss()(mu, ls, y)) == pytest.approx(float(expected.mean()), rel=1e-5)
    with pytest.raises(ValueError, match="mean"):
        DiscretizedLogisticNLLLoss()(mu[..., :1], ls, y)
    with pytest.raises(ValueError, match="num_bins"):
        DiscretizedLogisticNLLLoss(num_bins=1)
