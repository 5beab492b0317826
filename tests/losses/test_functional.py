"""Elementwise log-likelihoods: values against direct float64 formulas, normalisation, stability."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from monai_cnf.losses.functional import (
    discretized_logistic_log_likelihood,
    log1mexp,
    weighted_bernoulli_log_likelihood,
)


def _eq9_direct(logits: np.ndarray, y: np.ndarray, beta: float, normalize: bool) -> np.ndarray:
    """Paper Eq. 9 evaluated with probabilities (float64), not logs."""
    p = 1.0 / (1.0 + np.exp(-logits))
    num = p ** (beta * y) * (1 - p) ** ((1 - beta) * (1 - y))
    if normalize:
        num = num / (p**beta + (1 - p) ** (1 - beta))
    return np.log(num)


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("normalize", [True, False])
def test_weighted_bernoulli_matches_direct_eq9(beta: float, normalize: bool) -> None:
    g = np.random.default_rng(0)
    logits = g.normal(0, 4, size=(3, 1, 5, 4))
    y = (g.random(size=logits.shape) < 0.3).astype(np.float64)
    got = weighted_bernoulli_log_likelihood(torch.from_numpy(logits), torch.from_numpy(y), beta, normalize)
    np.testing.assert_allclose(got.numpy(), _eq9_direct(logits, y, beta, normalize), rtol=1e-10, atol=1e-12)


def test_plain_bernoulli_when_beta_none() -> None:
    logits = torch.tensor([-2.0, 0.0, 3.0], dtype=torch.float64)
    y = torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64)
    p = torch.sigmoid(logits)
    expected = torch.log(torch.where(y > 0, p, 1 - p))
    torch.testing.assert_close(weighted_bernoulli_log_likelihood(logits, y), expected)
    torch.testing.assert_close(weighted_bernoulli_log_likelihood(logits, y, normalize=False), expected)


@pytest.mark.parametrize("beta", [0.1, 0.9, None])
def test_normalized_sums_to_one_over_labels(beta: float | None) -> None:
    logits = torch.linspace(-60, 60, 41, dtype=torch.float64)
    l1 = weighted_bernoulli_log_likelihood(logits, torch.ones_like(logits), beta)
    l0 = weighted_bernoulli_log_likelihood(logits, torch.zeros_like(logits), beta)
    torch.testing.assert_close(l1.exp() + l0.exp(), torch.ones_like(logits), rtol=0, atol=1e-12)


def test_unnormalized_does_not_sum_to_one() -> None:
    logits = torch.tensor([0.0], dtype=torch.float64)
    s = sum(weighted_bernoulli_log_likelihood(logits, torch.full_like(logits, v), 0.9, False).exp() for v in (0, 1))
    # 0.5**0.9 + 0.5**0.1 by hand
    assert float(s) == pytest.approx(0.5**0.9 + 0.5**0.1, rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_weighted_bernoulli_stable_at_large_logits(dtype: torch.dtype) -> None:
    logits = torch.tensor([-1000.0, -50.0, -50.0, 50.0, 50.0, 1000.0], dtype=dtype, requires_grad=True)
    y = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0], dtype=dtype)
    ll = weighted_bernoulli_log_likelihood(logits, y, beta=0.9)
    assert torch.isfinite(ll).all()
    ll.sum().backward()
    assert torch.isfinite(logits.grad).all()
    # by hand: l=-50, y=1: 0.9 * (-50) - log(e^-45 + 1);  l=50, y=0: 0.1 * (-50) - log(1 + e^-5)
    ll = ll.detach()
    assert float(ll[1]) == pytest.approx(-45.0 - math.log1p(math.exp(-45.0)), rel=1e-6)
    assert float(ll[4]) == pytest.approx(-5.0 - math.log1p(math.exp(-5.0)), rel=1e-6)
    # l=1000, y=0: -100 - log(1 + e^-100)
    assert float(ll[5]) == pytest.approx(-100.0, rel=1e-6)
    # l=-1000, y=1 (sigmoid underflows in float32): 0.9 * (-1000) - log(e^-900 + 1)
    assert float(ll[0]) == pytest.approx(-900.0, rel=1e-6)
    # l=-50, y=0: 0.1 * log(sigmoid(50)) - log(e^-45 + 1), both terms below 1e-19
    assert float(ll[2]) == pytest.approx(0.0, abs=1e-12)
    # l=50, y=1: 0.9 * log(sigmoid(50)) - log(1 + e^-5)
    assert float(ll[3]) == pytest.approx(-math.log1p(math.exp(-5.0)), rel=1e-6)


def test_weighted_bernoulli_bad_input() -> None:
    with pytest.raises(ValueError, match="target"):
        weighted_bernoulli_log_likelihood(torch.zeros(3), torch.tensor([0.0, 0.5, 1.0]))
    with pytest.raises(ValueError, match="beta"):
        weighted_bernoulli_log_likelihood(torch.zeros(2), torch.zeros(2), beta=1.5)
    with pytest.raises(ValueError, match="logits"):
        weighted_bernoulli_log_likelihood(torch.tensor([float("nan")]), torch.zeros(1))


def _logistic_cdf(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@pytest.mark.parametrize("mu,log_s", [(100.3, 0.0), (0.0, 2.0), (255.0, -1.0), (-30.0, 3.0), (127.5, 6.0)])
def test_discretized_logistic_sums_to_one_and_matches_cdf(mu: float, log_s: float) -> None:
    y = torch.arange(256, dtype=torch.float64)
    ll = discretized_logistic_log_likelihood(y, torch.full_like(y, mu), torch.full_like(y, log_s))
    assert float(ll.exp().sum()) == pytest.approx(1.0, abs=1e-12)
    s = math.exp(log_s)
    yn = y.numpy()
    upper = np.where(yn == 255, 1.0, _logistic_cdf((yn + 0.5 - mu) / s))
    lower = np.where(yn == 0, 0.0, _logistic_cdf((yn - 0.5 - mu) / s))
    # same differences written with survival functions (1 - CDF), exact in the upper tail where CDFs round to 1
    sf_upper = np.where(yn == 255, 0.0, _logistic_cdf(-(yn + 0.5 - mu) / s))
    sf_lower = np.where(yn == 0, 1.0, _logistic_cdf(-(yn - 0.5 - mu) / s))
    probs = np.where(yn > mu, sf_lower - sf_upper, upper - lower)
    ok = probs > 1e-200
    np.testing.assert_allclose(ll.numpy()[ok], np.log(probs[ok]), rtol=1e-7, atol=1e-9)


def test_discretized_logistic_small_bins_and_tails() -> None:
    y = torch.arange(4, dtype=torch.float64)
    ll = discretized_logistic_log_likelihood(y, torch.full_like(y, 1.2), torch.full_like(y, -0.5), num_bins=4)
    assert float(ll.exp().sum()) == pytest.approx(1.0, abs=1e-12)
    # far tail in float32: direct CDF difference would be 0 (log -inf); the stable form is finite and ~ log pdf
    y32 = torch.tensor([200.0])
    mu = torch.tensor([10.0], requires_grad=True)
    ls = torch.tensor([0.0], requires_grad=True)
    ll32 = discretized_logistic_log_likelihood(y32, mu, ls)
    assert torch.isfinite(ll32).all()
    # log P ~ -(190) - 2 log(1 + e^-190) + log(e^0.5 - e^-0.5) for x >> 0: logistic tail e^{-x}
    assert float(ll32.detach()) == pytest.approx(-190.0 + math.log(math.exp(0.5) - math.exp(-0.5)), rel=1e-5)
    ll32.sum().backward()
    assert torch.isfinite(mu.grad).all() and torch.isfinite(ls.grad).all()


@pytest.mark.parametrize("log_s", [-50.0, -10.0, 10.0])
def test_discretized_logistic_extreme_scales_finite(log_s: float) -> None:
    y = torch.tensor([0.0, 3.0, 128.0, 255.0])
    mu = torch.tensor([0.0, 3.0, 128.4, 255.0], requires_grad=True)
    ls = torch.full((4,), log_s, requires_grad=True)
    ll = discretized_logistic_log_likelihood(y, mu, ls)
    assert torch.isfinite(ll).all()
    ll.sum().backward()
    assert torch.isfinite(mu.grad).all() and torch.isfinite(ls.grad).all()
    if log_s < 0:  # a point mass on the right bin: probability 1
        torch.testing.assert_close(ll, torch.zeros(4), atol=1e-4, rtol=0)
    else:  # a very wide logistic: the float64 CDF differences by hand (edge bins about 1/2, interior 1/(4s))
        s = math.exp(log_s)

        def cdf(v: float) -> float:
            return 1.0 / (1.0 + math.exp(-v / s))

        ref = [cdf(0.5 - 0.0), cdf(3.5 - 3.0) - cdf(2.5 - 3.0), cdf(128.5 - 128.4) - cdf(127.5 - 128.4)]
        ref.append(1.0 - cdf(254.5 - 255.0))
        torch.testing.assert_close(
            ll.detach().double(), torch.tensor(ref, dtype=torch.float64).log(), rtol=0, atol=1e-4
        )


def test_discretized_logistic_bad_input() -> None:
    z = torch.zeros(2)
    with pytest.raises(ValueError, match="target"):
        discretized_logistic_log_likelihood(torch.tensor([0.5, 1.0]), z, z)
    with pytest.raises(ValueError, match="target"):
        discretized_logistic_log_likelihood(torch.tensor([0.0, 256.0]), z, z)
    with pytest.raises(ValueError, match="mean"):
        discretized_logistic_log_likelihood(z, torch.tensor([float("nan"), 0.0]), z)


def test_log1mexp_matches_direct() -> None:
    x = torch.tensor([1e-6, 0.1, 0.69, 0.7, 5.0], dtype=torch.float64)
    torch.testing.assert_close(log1mexp(x), torch.log(1 - torch.exp(-x)), rtol=1e-9, atol=0.0)
    # large x: log(1 - e^-x) = -e^-x - e^-2x/2 - ...; the direct form rounds to 0
    assert float(log1mexp(torch.tensor(40.0, dtype=torch.float64))) == pytest.approx(-math.exp(-40.0), rel=1e-12)
