"""FactoredBaseline: exact, normalised per-pixel likelihoods; samples and modes from the same distribution."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn
from torch.distributions import Bernoulli

from monai_cnf.losses.functional import discretized_logistic_log_likelihood
from monai_cnf.networks import FactoredBaseline


class TinyConditioner(nn.Module):
    def __init__(self, in_channels: int = 2, channels: int = 4) -> None:
        super().__init__()
        self.out_channels = [channels]
        self.net = nn.Conv2d(in_channels, channels, 2, stride=2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [torch.tanh(self.net(x))]


def _randomise_head(model: FactoredBaseline) -> None:
    with torch.no_grad():
        for p in model.out[-1].parameters():  # the zero-initialised last conv
            p.normal_(0.0, 1.0)


def _bernoulli(beta: float | None = None, **kwargs) -> FactoredBaseline:
    model = FactoredBaseline(
        2, 2, 1, num_levels=1, conditioner=TinyConditioner(), beta=beta, hidden_channels=8, **kwargs
    ).double()
    _randomise_head(model)
    return model


@pytest.mark.parametrize("beta", [None, 0.1, 0.9])
def test_bernoulli_sums_to_one_over_all_16_labelings(beta: float | None) -> None:
    model = _bernoulli(beta)
    ys = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)), dtype=torch.float64).view(16, 1, 2, 2)
    x = torch.randn(1, 2, 2, 2, dtype=torch.float64).expand(16, -1, -1, -1)
    probs = model.log_prob(ys, x).exp()
    torch.testing.assert_close(probs.sum(), torch.tensor(1.0, dtype=torch.float64), rtol=0, atol=1e-12)
    # the likelihood's marginal P(y_j = 1) from the 16 labelings is Eq. 9's (the plain Bernoulli's without beta)
    marginal = (probs.view(16, 1, 1, 1) * ys).sum(0)
    p = torch.sigmoid(model.head(x[:1]))[0]
    b = 1.0 if beta is None else beta
    eq9 = p**b / (p**b + (1 - p) ** (1 - b)) if beta is not None else p
    torch.testing.assert_close(marginal, eq9, rtol=0, atol=1e-12)


def test_bernoulli_log_prob_matches_independent_formulas() -> None:
    model = _bernoulli(None)
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    y = (torch.rand(3, 1, 4, 4, dtype=torch.float64) > 0.5).double()
    logits = model.head(x)
    expected = Bernoulli(logits=logits).log_prob(y).flatten(1).sum(1)
    torch.testing.assert_close(model.log_prob(y, x), expected)
    torch.testing.assert_close(model.bits_per_dim(y, x), -expected / (16 * math.log(2)))

    beta = 0.3
    weighted = _bernoulli(beta)
    p = torch.sigmoid(weighted.head(x))  # Eq. 9, evaluated directly in float64
    eq9 = p ** (beta * y) * (1 - p) ** ((1 - beta) * (1 - y)) / (p**beta + (1 - p) ** (1 - beta))
    torch.testing.assert_close(weighted.log_prob(y, x), eq9.log().flatten(1).sum(1))


def test_logistic_sums_to_one_over_all_256_to_the_4_images() -> None:
    """sum over all 256^4 images of a 2x2 target, exactly, from 1024 evaluations.

    For any factored model, with y^(j,k) the image that is 0 except pixel j = k, S_j = sum_k P(y^(j,k)) equals
    P(0) / p_j(0) * sum_k p_j(k), so prod_j S_j / P(0)^3 = prod_j sum_k p_j(k) = sum_y P(y).
    """
    model = FactoredBaseline(
        2, 2, 1, num_levels=1, conditioner=TinyConditioner(), likelihood="logistic", hidden_channels=8
    ).double()
    _randomise_head(model)
    ys = torch.zeros(4, 256, 1, 2, 2, dtype=torch.float64)
    for j in range(4):
        ys[j, :, 0, j // 2, j % 2] = torch.arange(256, dtype=torch.float64)
    x = torch.rand(1, 2, 2, 2, dtype=torch.float64).expand(1024, -1, -1, -1)
    lp = model.log_prob(ys.view(1024, 1, 2, 2), x).view(4, 256)
    log_s = torch.logsumexp(lp, dim=1)  # log S_j
    log_p0 = lp[0, 0]  # log P(all zeros)
    log_total = log_s.sum() - 3 * log_p0
    torch.testing.assert_close(log_total, torch.tensor(0.0, dtype=torch.float64), rtol=0, atol=1e-10)


def test_logistic_samples_and_exact_mode() -> None:
    model = FactoredBaseline(
        2, 2, 2, num_levels=1, conditioner=TinyConditioner(), likelihood="logistic", hidden_channels=8
    ).double()
    _randomise_head(model)
    with torch.no_grad():
        model.out[-1].bias[2:] += 2.0  # scales ~ 8 e^2 grey levels: plenty of mass in the edge bins
    x = torch.rand(1, 2, 2, 2, dtype=torch.float64)
    mean, log_scale = model.head(x)
    grid = torch.arange(256, dtype=torch.float64).view(256, 1, 1, 1, 1)
    pmf = discretized_logistic_log_likelihood(grid.expand(256, *mean.shape), mean, log_scale).exp()
    torch.testing.assert_close(pmf.sum(0), torch.ones_like(mean))
    mode = model(x)
    assert torch.equal(mode, pmf.argmax(0).double())  # brute force over all 256 values
    samples = model.sample(x, num_samples=20000, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (20000, 1, 2, 2, 2)
    assert torch.equal(samples, samples.round()) and samples.min() >= 0 and samples.max() <= 255
    exact_mean = (pmf * grid).sum(0)
    exact_sd = ((pmf * grid**2).sum(0) - exact_mean**2).sqrt()
    err = (samples.mean(0) - exact_mean).abs()[0]
    assert bool((err < 4 * exact_sd[0] / math.sqrt(20000)).all()), err
    assert torch.equal(model.sample(x, num_samples=2, temperature=0.0)[1], mode)


def test_bernoulli_samples_mode_and_temperature() -> None:
    model = _bernoulli(0.9)
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        p = model.probabilities(x)
    s = model.sample(x, num_samples=4000, generator=torch.Generator().manual_seed(0))
    assert set(s.unique().tolist()) <= {0.0, 1.0}
    assert float((s.mean(0) - p).abs().max()) < 4 * 0.5 / math.sqrt(4000)
    assert torch.equal(model(x), (p > 0.5).double())
    cold = model.sample(x, num_samples=1, temperature=1e-6)[0]
    assert torch.equal(cold, model(x))


def test_head_shapes_2d_3d_and_sr() -> None:
    seg = FactoredBaseline(3, 1, 1, num_levels=2, hidden_channels=4, conditioner_kwargs={"feature_channels": 4})
    assert seg.head(torch.rand(2, 1, 8, 8, 8)).shape == (2, 1, 8, 8, 8)
    sr = FactoredBaseline(
        2,
        3,
        3,
        num_levels=2,
        conditioner="rrdb",
        likelihood="logistic",
        scale=2,
        hidden_channels=4,
        conditioner_kwargs={"num_blocks": 1, "growth_channels": 4, "feature_channels": 8},
    )
    x = torch.rand(2, 3, 4, 4)
    mean, log_scale = sr.head(x)
    assert mean.shape == log_scale.shape == (2, 3, 8, 8)
    # residual: the untrained (zero-initialised) head predicts the upsampled LR image, scale 8 grey levels
    up = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear")
    torch.testing.assert_close(mean, 255 * up)
    torch.testing.assert_close(log_scale, torch.full_like(log_scale, math.log(8.0)))


def test_training_reduces_bits_per_dim() -> None:
    model = FactoredBaseline(2, 3, 1, num_levels=2, hidden_channels=8, conditioner_kwargs={"feature_channels": (4, 8)})
    x = torch.rand(4, 3, 8, 8)
    y = (x[:, :1] > 0.5).float()
    before = float(model.bits_per_dim(y, x).mean().detach())
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        loss = model.bits_per_dim(y, x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = float(model.bits_per_dim(y, x).mean().detach())
    assert before == pytest.approx(1.0)  # the zero-initialised head starts at p = 0.5: 1 bit per pixel
    assert after < 0.8, after


def test_bad_input() -> None:
    model = FactoredBaseline(2, 3, 1, num_levels=2, hidden_channels=4, conditioner_kwargs={"feature_channels": 4})
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match=r"`y` must be binary"):
        model.log_prob(torch.full((1, 1, 8, 8), 0.5), x)
    with pytest.raises(ValueError, match=r"`x` must have shape \(B, in_channels=3"):
        model.log_prob(torch.ones(1, 1, 8, 8), torch.rand(1, 2, 8, 8))
    with pytest.raises(ValueError, match=r"`x` contains NaN"):
        model(torch.full_like(x, float("nan")))
    with pytest.raises(ValueError, match=r"DivisiblePadd"):
        model(torch.rand(1, 3, 6, 8))
    with pytest.raises(ValueError, match="beta"):
        FactoredBaseline(2, 3, 3, likelihood="logistic", beta=0.5)
    with pytest.raises(ValueError, match="likelihood"):
        FactoredBaseline(2, 3, 1, likelihood="gaussian")
    logistic = FactoredBaseline(
        2, 3, 3, num_levels=2, likelihood="logistic", hidden_channels=4, conditioner_kwargs={"feature_channels": 4}
    )
    with pytest.raises(ValueError, match="multiply by 255"):
        logistic.log_prob(torch.rand(1, 3, 8, 8), x)
    with pytest.raises(ValueError, match="bernoulli"):
        logistic.probabilities(x)


def test_bernoulli_samples_the_soft_image_and_log_prob_uses_eq9() -> None:
    """The paper samples its factored baseline as independent Bernoullis of sigmoid(l); bits/dim use Eq. 9."""
    beta = 0.9
    model = _bernoulli(beta)
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        soft = torch.sigmoid(model.head(x))
        torch.testing.assert_close(model.probabilities(x), soft)
    s = model.sample(x, num_samples=20000, generator=torch.Generator().manual_seed(1))
    assert float((s.mean(0) - soft).abs().max()) < 4 * 0.5 / math.sqrt(20000)
    y = (torch.rand(1, 1, 4, 4, dtype=torch.float64) > 0.5).double()
    eq9 = soft ** (beta * y) * (1 - soft) ** ((1 - beta) * (1 - y)) / (soft**beta + (1 - soft) ** (1 - beta))
    torch.testing.assert_close(model.log_prob(y, x), eq9.log().flatten(1).sum(1))


def test_masked_bits_per_dim_count_only_real_pixels() -> None:
    model = _bernoulli(0.9)
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    y = (torch.rand(2, 1, 4, 4, dtype=torch.float64) > 0.5).double()
    mask = torch.zeros(2, 1, 4, 4, dtype=torch.float64)
    mask[0, :, :2] = 1  # 8 real pixels
    mask[1, :, :, :1] = 1  # 4 real pixels
    one_hot = torch.eye(16, dtype=torch.float64).view(16, 1, 1, 4, 4).expand(16, 2, 1, 4, 4)
    per_pixel = torch.stack([model.log_prob(y, x, mask=m) for m in one_hot])  # (16, B): one pixel each
    expected = (per_pixel.T.view(2, 1, 4, 4) * mask).flatten(1).sum(1)
    torch.testing.assert_close(model.log_prob(y, x, mask=mask), expected)
    torch.testing.assert_close(
        model.bits_per_dim(y, x, mask=mask), -expected / (torch.tensor([8.0, 4.0]).double() * math.log(2))
    )
    torch.testing.assert_close(per_pixel.sum(0), model.log_prob(y, x))
    with pytest.raises(ValueError, match="mask"):
        model.bits_per_dim(y, x, mask=torch.ones(2, 1, 2, 2))
