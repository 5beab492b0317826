"""ConditionalNormalizingFlow: a proper (bounded) likelihood of discrete data, exact latents, sampling, bad input."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from monai_cnf.networks import ConditionalNormalizingFlow


class TinyConditioner(nn.Module):
    """A custom conditioner (one level): a 2x2 stride-2 conv, so it works on 2x2 images."""

    def __init__(self, in_channels: int = 2, channels: int = 4) -> None:
        super().__init__()
        self.out_channels = [channels]
        self.net = nn.Conv2d(in_channels, channels, 2, stride=2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [torch.tanh(self.net(x))]


def _small(dequantization: str = "binary", spatial_dims: int = 2, **kwargs) -> ConditionalNormalizingFlow:
    defaults = dict(
        num_levels=2,
        num_steps=2,
        hidden_channels=8,
        conditioner_kwargs={"feature_channels": (4, 8)},
        dequantizer_kwargs={"num_steps": 1, "hidden_channels": 8} if dequantization == "binary" else None,
    )
    defaults.update(kwargs)
    return ConditionalNormalizingFlow(spatial_dims, 3, 1, dequantization=dequantization, **defaults)


def _all_binary_2x2() -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)), dtype=torch.float64).view(16, 1, 2, 2)


def test_binary_likelihood_sums_to_one_over_all_16_labelings() -> None:
    """sum_y P(y|x) over all 2^4 binary 2x2 labelings, each P estimated by the importance-weighted bound.

    The half-lines of Eq. 8 tile R^4, so the exact sum is 1; exp(IW bound) is an unbiased estimate of P(y) and
    log of it a lower bound. The weights p/q are heavy-tailed (q vanishes faster than p at the cell boundary
    v = 0.5), so after a brief fit (q close to p's posterior) we use K = 4000 draws per labeling. Across seeds
    0, 1, 2 of this set-up the sum was 1.019, 0.998, 1.000; the tolerance 0.05 is 2.5x the worst of these, while
    a log q missing the softplus Jacobian (sum_i log sigmoid(u_i), about -0.8 per pixel at the start) or the flow
    log-determinant would be off by factors of ~e^3.
    """
    model = ConditionalNormalizingFlow(
        2,
        2,
        1,
        num_levels=1,
        num_steps=2,
        hidden_channels=8,
        conditioner=TinyConditioner(),
        coupling="affine",
        dequantizer_kwargs={"num_steps": 2, "hidden_channels": 8},
    ).double()
    ys = _all_binary_2x2()
    x = torch.randn(1, 2, 2, 2, dtype=torch.float64)
    target = torch.randn(16, dtype=torch.float64).softmax(0)  # some non-uniform P*(y | x) to fit
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        idx = torch.multinomial(target, 64, replacement=True)
        loss = -model.log_prob(ys[idx], x.expand(64, -1, -1, -1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        iw = model.log_prob(ys, x.expand(16, -1, -1, -1), num_samples=4000, generator=gen)
        total = float(iw.exp().sum())
        # the single-sample bound E_q[log p - log q] lies below log P(y) for every labeling
        elbo = torch.stack([model.log_prob(ys, x.expand(16, -1, -1, -1), generator=gen) for _ in range(200)]).mean(0)
    assert abs(total - 1.0) < 0.05, total
    assert bool((elbo < iw).all())


def test_uniform_dequantization_mass_matches_flow_samples() -> None:
    """Small alphabet (num_bins=2, 2x2 image): sum_y P(y|x) = P_flow(v in [0, 1)^4) < 1.

    The left side comes from log_prob (density direction, with the -D log K term); the right side from counting
    flow samples (decode direction) that land in the unit box: two independent routes through the model.
    """
    model = ConditionalNormalizingFlow(
        2,
        2,
        1,
        num_levels=1,
        num_steps=2,
        hidden_channels=8,
        conditioner=TinyConditioner(),
        coupling="affine",
        dequantization="uniform",
        dequantizer_kwargs={"num_bins": 2},
    ).double()
    ys = _all_binary_2x2()
    x = torch.randn(1, 2, 2, 2, dtype=torch.float64)
    with torch.no_grad():
        model.log_prob(ys, x.expand(16, -1, -1, -1))  # ActNorm data-dependent init on this batch
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        gen = torch.Generator().manual_seed(0)
        mass = float(model.log_prob(ys, x.expand(16, -1, -1, -1), num_samples=2000, generator=gen).exp().sum())
        n = 20000
        zs = [torch.randn(n, 4, 1, 1, generator=gen, dtype=torch.float64)]
        v = model.decode(zs, x.expand(n, -1, -1, -1))
        inside = ((v >= 0) & (v < 1)).flatten(1).all(1).double().mean().item()
    se = math.sqrt(inside * (1 - inside) / n)
    assert 0.05 < inside < 0.95  # a non-trivial mass
    # the IW estimate of each cell's mass has a bounded weight (uniform proposal): its MC error is < 0.01 here
    assert abs(mass - inside) < 4 * se + 0.01, (mass, inside, se)


def _change_of_variables(model: ConditionalNormalizingFlow, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log N(encode(y); 0, I) + log|det d encode / dy| of one continuous ``y`` (autograd Jacobian, float64)."""

    def flat_latents(v: torch.Tensor) -> torch.Tensor:
        return torch.cat([z.flatten() for z in model.encode(v.view_as(y), x)])

    jac = torch.autograd.functional.jacobian(flat_latents, y.flatten())
    eps = flat_latents(y)
    return -0.5 * eps.square().sum() - 0.5 * eps.numel() * math.log(2 * math.pi) + torch.linalg.slogdet(jac)[1]


def test_none_log_prob_is_change_of_variables_float64() -> None:
    """dequantization='none': log p(y|x) = log N(encode(y); 0, I) + log|det d encode / dy| (autograd, 64 x 64)."""
    model = _small("none").double()
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    y = torch.randn(1, 1, 8, 8, dtype=torch.float64)
    model.log_prob(y.expand(4, -1, -1, -1) + torch.randn(4, 1, 8, 8, dtype=torch.float64), x.expand(4, -1, -1, -1))
    with torch.no_grad():
        for p in model.flow.parameters():
            p.add_(torch.randn_like(p) * 0.05)

    torch.testing.assert_close(model.log_prob(y, x)[0], _change_of_variables(model, y, x), rtol=1e-9, atol=1e-9)
    bpd = model.bits_per_dim(y, x)
    torch.testing.assert_close(bpd, -model.log_prob(y, x) / (64 * math.log(2)))


@pytest.mark.parametrize("dequantization", ["binary", "uniform", "none"])
def test_encode_decode_exact_inverse(dequantization: str) -> None:
    model = _small(dequantization).double()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    v = torch.rand(2, 1, 8, 8, dtype=torch.float64) * 2 - 0.5
    model.encode(v, x)  # ActNorm init
    zs = model.encode(v, x)
    assert [tuple(z.shape) for z in zs] == [(2, 2, 4, 4), (2, 8, 2, 2)]  # coarse last
    torch.testing.assert_close(model.decode(zs, x), v, rtol=0, atol=1e-10)
    torch.testing.assert_close(model.encode(model.decode(zs, x), x), zs, rtol=0, atol=1e-10)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_binary_samples_and_prediction(spatial_dims: int) -> None:
    model = _small("binary", spatial_dims)
    x = torch.rand(2, 3, *([8] * spatial_dims))
    y = (torch.rand(2, 1, *([8] * spatial_dims)) > 0.5).float()
    lp = model.log_prob(y, x)
    assert lp.shape == (2,) and torch.isfinite(lp).all() and bool((lp < 0).all())  # a probability of a discrete y
    samples = model.sample(x, num_samples=3, temperature=1.0, chunk_size=2)
    assert samples.shape == (3, 2, 1, *([8] * spatial_dims))
    assert set(samples.unique().tolist()) <= {0.0, 1.0}
    assert len(samples.unique()) == 2  # temperature 1 gives both labels
    pred = model(x)
    assert pred.shape == (2, 1, *([8] * spatial_dims))
    assert torch.equal(pred, model(x))  # deterministic
    assert torch.equal(model.sample(x, num_samples=2, temperature=0.0), torch.stack([pred, pred]))


def test_sampling_runs_the_conditioner_once_and_generator_reproduces() -> None:
    model = _small("binary")
    x = torch.rand(2, 3, 8, 8)
    calls = []
    model.conditioner.register_forward_hook(lambda *args: calls.append(1))
    a = model.sample(x, num_samples=5, generator=torch.Generator().manual_seed(3))
    assert len(calls) == 1
    b = model.sample(x, num_samples=5, generator=torch.Generator().manual_seed(3), chunk_size=5)
    assert torch.equal(a, b)  # the same noise, whether the samples are drawn one by one or batched


def test_uniform_8bit_samples_are_integers_in_range_for_sr() -> None:
    model = ConditionalNormalizingFlow(
        2,
        3,
        3,
        num_levels=2,
        num_steps=2,
        hidden_channels=8,
        conditioner="rrdb",
        coupling="affine",
        dequantization="uniform",
        scale=2,
        conditioner_kwargs={"num_blocks": 1, "growth_channels": 4, "feature_channels": 8},
    )
    x = torch.rand(2, 3, 4, 4)  # LR image; the HR target is 8x8
    y = torch.randint(0, 256, (2, 3, 8, 8)).float()
    bpd = model.bits_per_dim(y, x)
    assert bpd.shape == (2,) and bool((bpd > 0).all())
    # the 8-bit bound by hand: v = (y + u) / 256 with u ~ U[0, 1), log P(y) >= log p(v - offset) - D log 256
    model = model.double().eval()
    x, y = x.double(), y.double()
    with torch.no_grad():
        log_p = model.log_prob(y, x, generator=torch.Generator().manual_seed(5))
        v = (y + torch.rand(y.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)) / 256
        conds = model._conds(x)
        by_hand = model.flow.log_prob(v - model._offset(x, conds), conds) - y[0].numel() * math.log(256)
        torch.testing.assert_close(log_p, by_hand, atol=1e-9, rtol=0)
    s = model.float().sample(x.float(), num_samples=2, temperature=1.0)
    assert s.shape == (2, 2, 3, 8, 8)
    assert torch.equal(s, s.round()) and s.min() >= 0 and s.max() <= 255
    assert model(x.float()).shape == (2, 3, 8, 8)


def test_importance_weighting_tightens_the_bound() -> None:
    model = _small("binary").double()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    y = (torch.rand(2, 1, 8, 8, dtype=torch.float64) > 0.5).double()
    with torch.no_grad():
        single = torch.stack([model.log_prob(y, x) for _ in range(32)]).mean(0)
        iw = torch.stack([model.log_prob(y, x, num_samples=32) for _ in range(4)]).mean(0)
    assert bool((iw > single + 1.0).all()), (iw, single)  # E log mean w > E log w by Jensen; gap > 1 nat here


def test_training_reduces_bits_per_dim() -> None:
    model = _small("binary")
    x = torch.rand(4, 3, 8, 8)
    y = (x[:, :1] > 0.5).float()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        before = float(model.bits_per_dim(y, x, num_samples=4).mean())
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(40):
        loss = model.bits_per_dim(y, x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        gen.manual_seed(0)
        after = float(model.bits_per_dim(y, x, num_samples=4).mean())
    assert after < before - 0.2, (before, after)


def test_custom_conditioner_channels() -> None:
    class NoAttr(nn.Module):
        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            return [x[:, :, ::2, ::2]]

    with pytest.raises(ValueError, match="out_channels"):
        ConditionalNormalizingFlow(2, 2, 1, num_levels=1, num_steps=1, conditioner=NoAttr())
    model = ConditionalNormalizingFlow(
        2,
        2,
        1,
        num_levels=1,
        num_steps=1,
        hidden_channels=4,
        conditioner=NoAttr(),
        cond_channels=[2],
        dequantization="none",
    )
    assert model.log_prob(torch.randn(1, 1, 4, 4), torch.randn(1, 2, 4, 4)).shape == (1,)
    bad = ConditionalNormalizingFlow(
        2, 2, 1, num_levels=1, num_steps=1, hidden_channels=4, conditioner=NoAttr(), cond_channels=[3]
    )
    with pytest.raises(ValueError, match=r"conds\[0\]"):
        bad(torch.randn(1, 2, 4, 4))


def test_bad_input_errors_name_the_argument_and_the_fix() -> None:
    model = _small("binary")
    x, y = torch.rand(1, 3, 8, 8), torch.ones(1, 1, 8, 8)
    with pytest.raises(ValueError, match=r"`y` must be binary.*AsDiscreted"):
        model.log_prob(torch.full_like(y, 0.7), x)
    with pytest.raises(ValueError, match=r"`y` contains NaN"):
        model.log_prob(torch.full_like(y, float("nan")), x)
    with pytest.raises(ValueError, match=r"`x` contains NaN"):
        model.log_prob(y, torch.full_like(x, float("nan")))
    with pytest.raises(ValueError, match=r"`x` must have shape \(B, in_channels=3"):
        model.log_prob(y, torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match=r"`y` must have shape \(B, out_channels=1"):
        model.log_prob(torch.ones(1, 2, 8, 8), x)
    with pytest.raises(ValueError, match=r"DivisiblePadd\(keys=\.\.\., k=4\)"):
        model.log_prob(torch.ones(1, 1, 6, 8), torch.rand(1, 3, 6, 8))
    with pytest.raises(ValueError, match=r"DivisiblePadd\(keys=\.\.\., k=4\)"):
        model(torch.rand(1, 3, 10, 8))
    with pytest.raises(ValueError, match=r"implies"):
        model.log_prob(torch.ones(1, 1, 16, 16), x)
    uniform = _small("uniform")
    with pytest.raises(ValueError, match=r"multiply by 255"):
        uniform.log_prob(torch.rand(1, 1, 8, 8), x)
    with pytest.raises(ValueError, match="dequantization"):
        _small("gaussian")
    with pytest.raises(ValueError, match="scale"):
        _small("binary", scale=2)  # VGG works at the target's resolution
    with pytest.raises(ValueError, match="num_samples"):
        model.log_prob(y, x, num_samples=0)
    with pytest.raises(ValueError, match="temperature"):
        model.sample(x, temperature=-1.0)


def _sr(residual: bool, dequantization: str = "none") -> ConditionalNormalizingFlow:
    return ConditionalNormalizingFlow(
        2, 3, 3, num_levels=2, num_steps=2, hidden_channels=8, conditioner="rrdb", coupling="affine",
        dequantization=dequantization, scale=2, residual=residual,
        conditioner_kwargs={"num_blocks": 1, "growth_channels": 4, "feature_channels": 8},
    ).double()  # fmt: skip


def test_residual_shift_is_volume_preserving_float64() -> None:
    """residual=True: log p(y | x) is the plain flow's density of y - upsample(x) (the shift's log-det is 0)."""
    torch.manual_seed(0)
    plain, residual = _sr(False), _sr(True)
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64)
    base = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    y = base + 0.1 * torch.randn(2, 3, 8, 8, dtype=torch.float64)
    residual.log_prob(y, x)  # ActNorm init on the residual
    plain.load_state_dict(residual.state_dict())  # the shift adds no parameter
    torch.testing.assert_close(residual.log_prob(y, x), plain.log_prob(y - base, x), rtol=1e-12, atol=1e-12)
    zs = residual.encode(y, x)
    torch.testing.assert_close(residual.decode(zs, x), y, rtol=0, atol=1e-10)
    # the temperature-0 prediction is the interpolated image plus the flow's correction
    zero = [torch.zeros_like(z) for z in zs]
    torch.testing.assert_close(residual.decode(zero, x) - base, plain.decode(zero, x), rtol=0, atol=1e-12)


def test_residual_8bit_bins_are_centred_on_the_interpolated_grey_level() -> None:
    model = _sr(True, "uniform")
    x = torch.randint(0, 256, (1, 3, 4, 4), dtype=torch.float64) / 255
    y = torch.randint(0, 256, (1, 3, 8, 8)).double()
    offset = model._offset(x)
    base = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    # v = (y + u) / 256: the offset sits in the middle of the bin of the interpolated grey level 255 * base
    torch.testing.assert_close(model.dequantizer.quantize(offset), torch.floor(255 * base + 0.5).clamp(0, 255))
    torch.testing.assert_close(offset, (255 * base + 0.5) / 256)
    assert torch.isfinite(model.log_prob(y, x)).all()
    s = model.sample(x, num_samples=2, temperature=0.5)
    assert torch.equal(s, s.round()) and s.min() >= 0 and s.max() <= 255


def test_residual_needs_matching_channels_and_non_binary_targets() -> None:
    with pytest.raises(ValueError, match="in_channels == out_channels"):
        ConditionalNormalizingFlow(2, 3, 1, dequantization="none", residual=True)
    with pytest.raises(ValueError, match="dequantization 'uniform' or 'none'"):
        ConditionalNormalizingFlow(2, 1, 1, dequantization="binary", residual=True)


def test_learned_shift_is_a_volume_preserving_change_of_variables_float64() -> None:
    """residual + learned_shift: log p(y|x) = log N(encode(y)) + log|det d encode/dy| (autograd), the shift head
    perturbed away from its zero init; it starts at the interpolated image and trains with the likelihood."""
    torch.manual_seed(0)
    model = ConditionalNormalizingFlow(
        2, 3, 3, num_levels=2, num_steps=2, hidden_channels=8, conditioner="rrdb", coupling="affine",
        dequantization="none", scale=2, residual=True, learned_shift=True,
        conditioner_kwargs={"num_blocks": 1, "growth_channels": 4, "feature_channels": 8},
    ).double()  # fmt: skip
    x = torch.rand(1, 3, 4, 4, dtype=torch.float64)
    base = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(model._offset(x, model._conds(x)), base)  # zero-initialised head
    y = base + 0.1 * torch.randn(1, 3, 8, 8, dtype=torch.float64)
    model.log_prob(
        y.expand(4, -1, -1, -1) + 0.1 * torch.randn(4, 3, 8, 8, dtype=torch.float64), x.expand(4, -1, -1, -1)
    )
    with torch.no_grad():
        for p in model.shift_head.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    assert (model._offset(x, model._conds(x)) - base).abs().max() > 1e-3  # the head now shifts

    torch.testing.assert_close(model.log_prob(y, x)[0], _change_of_variables(model, y, x), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(model.decode(model.encode(y, x), x), y, rtol=0, atol=1e-10)
    model.log_prob(y, x).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.shift_head.parameters())
    with pytest.raises(ValueError, match="needs `residual=True`"):
        ConditionalNormalizingFlow(2, 3, 3, dequantization="none", learned_shift=True)
