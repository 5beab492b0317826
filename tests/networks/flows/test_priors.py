"""GaussianPrior and SplitPrior: log-probabilities against torch.distributions, standardised latents, temperature."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal

from monai_cnf.networks.flows import GaussianPrior, SplitPrior


@pytest.mark.parametrize("sd", [2, 3])
@pytest.mark.parametrize("cond_channels", [0, 3])
def test_gaussian_prior_log_prob_and_sampling(sd: int, cond_channels: int, perturb) -> None:
    prior = perturb(GaussianPrior(sd, 4, cond_channels).double(), std=0.5)
    shape = (2, 4, *([4] * sd))
    cond = torch.randn(2, cond_channels, *([4] * sd), dtype=torch.float64) if cond_channels else None
    z = torch.randn(shape, dtype=torch.float64)
    mu, log_sigma = prior.params(cond)
    assert log_sigma.abs().max() > 0.05  # non-trivial parameters
    expected = Normal(mu, log_sigma.exp()).log_prob(z).expand(shape).flatten(1).sum(1)
    torch.testing.assert_close(prior.log_prob(z, cond), expected, atol=1e-10, rtol=0)
    eps, log_p = prior.encode(z, cond)
    torch.testing.assert_close(log_p, expected, atol=1e-10, rtol=0)
    torch.testing.assert_close(prior.sample(cond, eps=eps, shape=shape), z, atol=1e-10, rtol=0)
    kw = {"shape": (256, 4, *([4] * sd))}
    cond_big = cond.repeat(128, *[1] * (sd + 1)) if cond is not None else None
    mu_big, ls_big = prior.params(cond_big)
    mean = prior.sample(cond_big, temperature=0.0, **kw)
    torch.testing.assert_close(mean, mu_big.expand_as(mean), atol=0, rtol=0)
    for tau in (0.3, 1.0):
        s = prior.sample(cond_big, temperature=tau, generator=torch.Generator().manual_seed(0), **kw)
        std = ((s - mu_big) / ls_big.exp()).std().item()
        assert abs(std - tau) < 0.03 * tau


@pytest.mark.parametrize("sd", [2, 3])
@pytest.mark.parametrize("cond_channels", [0, 3])
@pytest.mark.parametrize("channels", [2, 5])
def test_split_prior(sd: int, cond_channels: int, channels: int, perturb) -> None:
    split = perturb(SplitPrior(sd, channels, cond_channels).double(), std=0.5)
    assert (split.kept_channels, split.dropped_channels) == (channels - channels // 2, channels // 2)
    z = torch.randn(3, channels, *([4] * sd), dtype=torch.float64)
    cond = torch.randn(3, cond_channels, *([4] * sd), dtype=torch.float64) if cond_channels else None
    kept, log_p = split(z, cond)
    torch.testing.assert_close(kept, z[:, : split.kept_channels], atol=0, rtol=0)
    mu, log_sigma = split.params(kept, cond)
    expected = Normal(mu, log_sigma.exp()).log_prob(z[:, split.kept_channels :]).flatten(1).sum(1)
    torch.testing.assert_close(log_p, expected, atol=1e-10, rtol=0)
    _, eps, _ = split.encode(z, cond)
    torch.testing.assert_close(split.inverse(kept, cond, eps=eps), z, atol=1e-10, rtol=0)
    torch.testing.assert_close(split.inverse(kept, cond, temperature=0.0)[:, split.kept_channels :], mu)
    a = split.inverse(kept, cond, generator=torch.Generator().manual_seed(5))
    b = split.inverse(kept, cond, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    if cond_channels:
        with pytest.raises(ValueError, match="SplitPrior expects cond"):
            split(z, None)
        with pytest.raises(ValueError, match="SplitPrior expects cond"):
            split.inverse(kept, cond[:, :1])
    else:
        with pytest.raises(ValueError, match="unconditional"):
            split(z, torch.randn(3, 2, *([4] * sd), dtype=torch.float64))


def test_prior_argument_errors() -> None:
    prior = GaussianPrior(2, 4, 3)
    with pytest.raises(ValueError, match="GaussianPrior expects cond"):
        prior.log_prob(torch.randn(1, 4, 4, 4), torch.randn(1, 3, 2, 2))
    with pytest.raises(ValueError, match="needs cond"):
        prior.sample(None)
    with pytest.raises(ValueError, match="temperature"):
        prior.sample(torch.randn(1, 3, 2, 2), temperature=-0.5)
    with pytest.raises(ValueError, match="shape"):
        GaussianPrior(2, 4).sample()
    with pytest.raises(ValueError, match="in_channels >= 2"):
        SplitPrior(2, 1)
    fixed = GaussianPrior(2, 2, learnable=False)
    assert not list(fixed.parameters())
    z = torch.randn(3, 2, 2, 2)
    torch.testing.assert_close(fixed.log_prob(z), Normal(0.0, 1.0).log_prob(z).flatten(1).sum(1))


def test_split_prior_samples_stay_finite_far_outside_the_training_range() -> None:
    """A split prior fed latents of size ~1e4 (what a high-temperature decode of a small flow can produce) used to
    return inf/NaN (sigma = exp(linear(z)) overflowed); the bounded log-scale keeps the sample finite, and leaves the
    density of ordinary latents unchanged."""
    from monai_cnf.networks.flows.priors import LOG_SIGMA_BOUND

    torch.manual_seed(0)
    split = SplitPrior(2, 8, cond_channels=4)
    with torch.no_grad():
        split.net.weight.normal_(0.0, 0.5)
    h = torch.randn(1, 4, 4, 4)
    huge = 4e3 * torch.randn(1, 4, 4, 4)
    with torch.no_grad():
        assert float(split.params(huge, h)[1].abs().max()) == LOG_SIGMA_BOUND  # clipped
        assert torch.isfinite(split.inverse(huge, h, temperature=1.0)).all()
        z = torch.randn(2, 8, 4, 4)
        _, log_sigma = split.params(z[:, :4], torch.randn(2, 4, 4, 4))
    assert float(log_sigma.abs().max()) < LOG_SIGMA_BOUND  # ordinary latents: the bound is never reached
