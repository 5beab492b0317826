"""ConditionalGlow: exact encode/decode, log_prob vs an independent change of variables, the density integrates to
one, temperature sampling, gradients, state_dict and input checks."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd.functional import jacobian

from monai_cnf.networks.flows import ConditionalGlow

COUPLINGS = ["affine", "additive"]


def _glow(sd: int, conditional: bool, coupling: str = "affine", in_channels: int = 1, dtype=torch.float64):
    cc = [3, 5] if conditional else None
    flow = ConditionalGlow(sd, in_channels, cc, num_levels=2, num_steps=2, hidden_channels=8, coupling=coupling)
    return flow.to(dtype)


def _conds(flow: ConditionalGlow, batch: int, size: int, dtype=torch.float64, gen=None):
    if not flow.conditional:
        return None
    return [
        torch.randn(batch, c, *([size // 2 ** (level + 1)] * flow.spatial_dims), dtype=dtype, generator=gen)
        for level, c in enumerate(flow.cond_channels)
    ]


@pytest.mark.parametrize("sd", [2, 3])
@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("coupling", COUPLINGS)
def test_encode_decode_exact_float64(sd: int, conditional: bool, coupling: str, perturb) -> None:
    flow = perturb(_glow(sd, conditional, coupling, in_channels=2), std=0.2).eval()
    conds = _conds(flow, 2, 8)
    y = torch.randn(2, 2, *([8] * sd), dtype=torch.float64)
    zs = flow.encode(y, conds)
    shapes = flow.latent_shapes(y.shape)
    assert [tuple(z.shape) for z in zs] == shapes
    assert sum(z[0].numel() for z in zs) == y[0].numel()  # a bijection onto the latents
    torch.testing.assert_close(flow.decode(zs, conds), y, atol=1e-6, rtol=0)
    # and the other way round: encode(decode(eps)) == eps
    eps = [torch.randn(s, dtype=torch.float64) for s in shapes]
    back = flow.encode(flow.decode(eps, conds), conds)
    for a, b in zip(back, eps, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


@pytest.mark.parametrize("sd, size", [(2, 64), (3, 16)])
def test_float32_round_trip_large(sd: int, size: int, perturb) -> None:
    flow = perturb(_glow(sd, True, "affine", in_channels=3, dtype=torch.float32), std=0.2).eval()
    conds = _conds(flow, 2, size, dtype=torch.float32)
    y = torch.rand(2, 3, *([size] * sd))
    with torch.no_grad():
        err = (flow.decode(flow.encode(y, conds), conds) - y).abs().max().item()
    assert err <= 1e-4


@pytest.mark.parametrize("sd, size", [(2, 4), (3, 4)])
@pytest.mark.parametrize("coupling", COUPLINGS)
def test_log_prob_is_change_of_variables_onto_standard_normal_latents(sd, size, coupling, perturb) -> None:
    """log p(y) = sum log N(eps; 0, 1) + log|det d eps / d y|, with the Jacobian from autograd (independent of the
    logdet bookkeeping of every layer and prior)."""
    flow = perturb(_glow(sd, True, coupling), std=0.3).eval()
    conds = _conds(flow, 2, size)
    y = torch.randn(2, 1, *([size] * sd), dtype=torch.float64)
    log_p = flow.log_prob(y, conds)
    for b in range(2 if sd == 2 else 1):  # 3D: 64 dims, one sample keeps the Jacobian cheap
        c_b = [c[b : b + 1] for c in conds]

        def f(v: torch.Tensor, c_b=c_b) -> torch.Tensor:
            return torch.cat([z.reshape(-1) for z in flow.encode(v.reshape(1, *y.shape[1:]), c_b)])

        flat = y[b].reshape(-1)
        eps = f(flat)
        _, logabs = torch.linalg.slogdet(jacobian(f, flat))
        expected = torch.distributions.Normal(0.0, 1.0).log_prob(eps).sum() + logabs
        torch.testing.assert_close(log_p[b], expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("sd", [2, 3])
def test_density_integrates_to_one(sd: int, perturb) -> None:
    """Importance-sampling estimate of the integral of p(y | h) over R^D for y of shape (1, 2, 2[, 2]) and L=1.

    Proposal: a 0.7/0.3 mixture of Gaussians with the model's own sample mean and covariance, scaled by 1.3 and 2.5
    (defensive heavy component). With 200k draws the estimate's standard error is measured at ~0.3%; the estimate
    must be within 5 of its own standard errors of 1 (about 1.5%: a logdet missing a 0.015-nat term fails), and the
    standard error itself must be < 1%.
    """
    torch.manual_seed(0)
    flow = ConditionalGlow(sd, 1, [3], num_levels=1, num_steps=2, hidden_channels=8, coupling="affine").double()
    perturb(flow, std=0.2).eval()
    cond = torch.randn(1, 3, *([1] * sd), dtype=torch.float64)
    dim, n = 2**sd, 200_000
    with torch.no_grad():
        s = flow.sample([cond.expand(4000, -1, *[-1] * sd)], generator=torch.Generator().manual_seed(0))
        s = s.reshape(4000, dim)
        assert s.std(0).min() > 0.1  # non-degenerate, non-trivial density
        mu, chol = s.mean(0), torch.linalg.cholesky(torch.cov(s.T))
        comps = [torch.distributions.MultivariateNormal(mu, scale_tril=chol * f) for f in (1.3, 2.5)]
        n0 = int(0.7 * n)
        y = torch.cat([comps[0].sample((n0,)), comps[1].sample((n - n0,))])
        log_q = torch.logsumexp(
            torch.stack([math.log(0.7) + comps[0].log_prob(y), math.log(0.3) + comps[1].log_prob(y)]), 0
        )
        log_p = flow.log_prob(y.reshape(n, 1, *([2] * sd)), [cond.expand(n, -1, *[-1] * sd)])
        w = torch.exp(log_p - log_q)
    estimate, stderr = w.mean().item(), (w.std() / math.sqrt(n)).item()
    assert stderr < 0.01
    assert abs(estimate - 1.0) < 5 * stderr, (estimate, stderr)


@pytest.mark.parametrize("sd", [2, 3])
@pytest.mark.parametrize("conditional", [False, True])
def test_temperature_zero_is_deterministic_and_tau_scales_latent_std(sd: int, conditional: bool, perturb) -> None:
    flow = perturb(_glow(sd, conditional), std=0.2).eval()
    size = 8
    conds = _conds(flow, 64, size)
    kw = {} if conditional else {"batch_size": 64, "spatial_size": [size] * sd}
    with torch.no_grad():
        a = flow.sample(conds, 0.0, torch.Generator().manual_seed(1), **kw)
        b = flow.sample(conds, 0.0, torch.Generator().manual_seed(2), **kw)
        assert a.dtype == torch.float64 and a.shape == (64, 1, *([size] * sd))
        torch.testing.assert_close(a, b, atol=0, rtol=0)
        zero = [torch.zeros(s, dtype=torch.float64) for s in flow.latent_shapes(a.shape)]
        torch.testing.assert_close(a, flow.decode(zero, conds), atol=1e-12, rtol=0)
        for tau in (0.5, 1.0):
            y = flow.sample(conds, tau, torch.Generator().manual_seed(3), **kw)
            eps = torch.cat([z.reshape(-1) for z in flow.encode(y, conds)])
            # 64 * size**sd values: the std estimate has a relative standard error < 1%
            assert abs(eps.std().item() - tau) < 0.05 * tau
            assert abs(eps.mean().item()) < 0.05 * tau
        same = flow.sample(conds, 0.7, torch.Generator().manual_seed(4), **kw)
        again = flow.sample(conds, 0.7, torch.Generator().manual_seed(4), **kw)
        torch.testing.assert_close(same, again, atol=0, rtol=0)


@pytest.mark.parametrize("sd", [2, 3])
@pytest.mark.parametrize("coupling", COUPLINGS)
def test_gradients_reach_every_parameter(sd: int, coupling: str, perturb) -> None:
    flow = perturb(_glow(sd, True, coupling, in_channels=2), std=0.2).train()
    conds = [c.requires_grad_() for c in _conds(flow, 2, 8)]
    y = torch.randn(2, 2, *([8] * sd), dtype=torch.float64)
    (-flow.log_prob(y, conds).mean()).backward()
    for name, p in flow.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().max() > 0, name
        assert torch.isfinite(p.grad).all(), name
    assert all(c.grad is not None and c.grad.abs().max() > 0 for c in conds)


@pytest.mark.parametrize("sd", [2, 3])
def test_state_dict_round_trip_keeps_actnorm_init(sd: int) -> None:
    flow = _glow(sd, True, in_channels=1).train()
    conds = _conds(flow, 4, 8)
    y = torch.rand(4, 1, *([8] * sd), dtype=torch.float64) * 3
    first = flow.log_prob(y, conds)  # data-dependent ActNorm init happens here
    fresh = _glow(sd, True, in_channels=1).train()
    fresh.load_state_dict(flow.state_dict())
    y2 = y * 5 - 2  # other statistics: a re-initialising ActNorm would change the result
    torch.testing.assert_close(fresh.log_prob(y2, conds), flow.log_prob(y2, conds), atol=0, rtol=0)
    torch.testing.assert_close(fresh.log_prob(y, conds), first, atol=0, rtol=0)


def test_out_shape_helpers() -> None:
    flow = ConditionalGlow(2, 3, [4, 6], num_levels=2, num_steps=1, hidden_channels=8)
    conds = [torch.randn(5, 4, 16, 12), torch.randn(5, 6, 8, 6)]
    assert flow.target_shape(conds) == (5, 3, 32, 24)
    assert flow.latent_shapes((5, 3, 32, 24)) == [(5, 6, 16, 12), (5, 24, 8, 6)]
    assert flow.divisor == 4
    assert flow.sample(conds, 0.5).shape == (5, 3, 32, 24)
    flow3 = ConditionalGlow(3, 1, None, num_levels=3, num_steps=1, hidden_channels=4)
    assert not flow3.conditional
    assert flow3.target_shape(None, batch_size=2, spatial_size=(8, 16, 8)) == (2, 1, 8, 16, 8)
    assert flow3.latent_shapes((2, 1, 8, 16, 8)) == [(2, 4, 4, 8, 4), (2, 16, 2, 4, 2), (2, 128, 1, 2, 1)]
    assert flow3.sample(batch_size=2, spatial_size=(8, 16, 8)).shape == (2, 1, 8, 16, 8)
    with pytest.raises(ValueError, match="batch_size and spatial_size"):
        flow3.sample()


@pytest.mark.parametrize("sd", [2, 3])
def test_input_checks(sd: int) -> None:
    flow = _glow(sd, True, in_channels=1, dtype=torch.float32)
    conds = _conds(flow, 2, 8, dtype=torch.float32)
    y = torch.rand(2, 1, *([8] * sd))
    flow.log_prob(y, conds)
    bad = torch.rand(2, 1, *([8] * (sd - 1)), 6)
    with pytest.raises(ValueError, match=rf"divisible by 2\*\*num_levels = 4, but spatial axis {sd - 1} has size 6"):
        flow.log_prob(bad, conds)
    with pytest.raises(ValueError, match="DivisiblePadd"):
        flow.log_prob(bad, conds)
    with pytest.raises(ValueError, match="num_levels=2 conds"):
        flow.log_prob(y, conds[:1])
    with pytest.raises(ValueError, match="num_levels=2 conds"):
        flow.log_prob(y, None)
    with pytest.raises(ValueError, match=r"conds\[1\] must have shape"):
        flow.log_prob(y, [conds[0], conds[1][:, :-1]])  # wrong channels
    with pytest.raises(ValueError, match=r"conds\[0\] must have shape"):
        flow.log_prob(y, [conds[0][..., :-1], conds[1]])  # wrong spatial size
    with pytest.raises(ValueError, match=r"conds\[0\] must have shape"):
        flow.log_prob(y, [conds[1], conds[1]])
    with pytest.raises(ValueError, match="NaN"):
        flow.log_prob(torch.where(y > 0.5, float("nan"), y), conds)
    with pytest.raises(ValueError, match="1 channels"):
        flow.log_prob(torch.rand(2, 2, *([8] * sd)), conds)
    with pytest.raises(ValueError, match="one entry per level"):
        ConditionalGlow(sd, 1, [3], num_levels=2)
    with pytest.raises(ValueError, match="unconditional"):
        _glow(sd, False, dtype=torch.float32).log_prob(y, conds)
    zs = flow.encode(y, conds)
    with pytest.raises(ValueError, match=r"latent zs\[0\] must have shape"):
        flow.decode([zs[0][:, :1], zs[1]], conds)
    with pytest.raises(ValueError, match="temperature"):
        flow.sample(conds, temperature=-1.0)


def test_conditioning_changes_the_density(perturb) -> None:
    flow = perturb(_glow(2, True), std=0.2).eval()
    y = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    c1, c2 = _conds(flow, 2, 8), _conds(flow, 2, 8)
    assert (flow.log_prob(y, c1) - flow.log_prob(y, c2)).abs().min() > 1e-3


def test_training_reduces_nll() -> None:
    """A few Adam steps on a conditional toy problem (y = cond-dependent mean + small noise) lower the NLL."""
    torch.manual_seed(0)
    flow = ConditionalGlow(2, 1, [2, 2], num_levels=2, num_steps=2, hidden_channels=16, coupling="affine")
    opt = torch.optim.Adam(flow.parameters(), lr=3e-3)
    h0 = torch.randn(8, 2, 4, 4)
    conds = [h0, torch.nn.functional.avg_pool2d(h0, 2)]
    y = torch.nn.functional.interpolate(h0[:, :1], scale_factor=2) + 0.1 * torch.randn(8, 1, 8, 8)
    losses = []
    for _ in range(20):
        loss = -flow.log_prob(y, conds).mean() / y[0].numel()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5


def test_channels_last_inputs(perturb) -> None:
    flow = perturb(_glow(2, True, in_channels=3, dtype=torch.float32), std=0.2).train()
    flow.to(memory_format=torch.channels_last)
    conds = [c.contiguous(memory_format=torch.channels_last) for c in _conds(flow, 2, 16, dtype=torch.float32)]
    y = torch.rand(2, 3, 16, 16)
    expected = flow.log_prob(y, [c.contiguous() for c in conds])
    log_p = flow.log_prob(y.contiguous(memory_format=torch.channels_last), conds)
    torch.testing.assert_close(log_p, expected, atol=1e-3, rtol=1e-5)
    log_p.sum().backward()
    flow.eval()
    with torch.no_grad():
        zs = flow.encode(y.contiguous(memory_format=torch.channels_last), conds)
        torch.testing.assert_close(flow.decode(zs, conds), y, atol=1e-5, rtol=0)
