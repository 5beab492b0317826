"""Dequantizers: v in the cell of y, quantize inverts, and log q is the exact change-of-variables density."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal

from monai_cnf.networks.dequantizers import BinaryDequantizer, UniformDequantizer
from monai_cnf.networks.flows.squeeze import unsqueeze


def _randomise(deq: BinaryDequantizer, y: torch.Tensor, context: torch.Tensor | None, std: float = 0.1) -> None:
    """Initialise ActNorm on one batch, then perturb every parameter so that no layer is the identity."""
    deq(y, context)
    with torch.no_grad():
        for p in deq.parameters():
            p.add_(torch.randn_like(p) * std)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_binary_v_in_the_half_line_of_y_and_quantize_inverts(spatial_dims: int) -> None:
    deq = BinaryDequantizer(spatial_dims, in_channels=2, context_channels=3, num_steps=2, hidden_channels=8)
    shape = (3, 2, *([4] * spatial_dims))
    y = (torch.rand(shape) > 0.4).float()
    context = torch.randn(3, 3, *shape[2:])
    _randomise(deq, y, context)
    v, log_q = deq(y, context)
    assert v.shape == y.shape and log_q.shape == (3,)
    assert bool(((v > 0.5) == (y == 1)).all())  # y=1 -> (0.5, inf), y=0 -> (-inf, 0.5)
    assert torch.equal(deq.quantize(v), y)
    assert torch.isfinite(log_q).all()


def test_binary_log_q_matches_float64_change_of_variables() -> None:
    """log q(v|y,x) = log N(eps; mu, sigma) - log|det dv/deps|, with the Jacobian from autograd (64 x 64)."""
    torch.manual_seed(1)
    deq = BinaryDequantizer(2, in_channels=1, context_channels=2, num_steps=3, hidden_channels=8).double()
    y = (torch.rand(1, 1, 8, 8, dtype=torch.float64) > 0.5).double()
    context = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    _randomise(deq, y, context)
    gen = torch.Generator().manual_seed(7)
    v, log_q = deq(y, context, generator=gen)

    # independent evaluation: rebuild eps from the same noise, push it through the public layers
    h = deq._features(y, context)
    mu, log_sigma = deq.prior.params(h)
    noise = torch.randn(mu.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    eps = (mu + noise * log_sigma.exp()).detach()
    sign = 2 * y - 1

    def eps_to_v(e: torch.Tensor) -> torch.Tensor:
        u = unsqueeze(deq.flow(e.view_as(eps), h)[0])
        return (0.5 + sign * F.softplus(u)).flatten()

    jac = torch.autograd.functional.jacobian(eps_to_v, eps.flatten())
    assert jac.shape == (64, 64)
    log_base = Normal(mu, log_sigma.exp()).log_prob(eps).sum()
    expected = log_base - torch.linalg.slogdet(jac)[1]
    torch.testing.assert_close(eps_to_v(eps), v.flatten())
    torch.testing.assert_close(log_q[0], expected, rtol=1e-9, atol=1e-9)
    # and the inverse path (v -> eps) gives the same density
    torch.testing.assert_close(deq.log_prob(v, y, context), log_q, rtol=1e-9, atol=1e-9)


def test_binary_log_prob_rejects_v_outside_the_cell() -> None:
    deq = BinaryDequantizer(2, in_channels=1, num_steps=1, hidden_channels=4)
    y = torch.ones(1, 1, 2, 2)
    with pytest.raises(ValueError, match="outside the cell"):
        deq.log_prob(torch.full_like(y, 0.25), y)


def test_binary_bad_input() -> None:
    deq = BinaryDequantizer(2, in_channels=1, context_channels=3, num_steps=1, hidden_channels=4)
    ctx = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match=r"`y` must be binary.*AsDiscreted"):
        deq(torch.full((1, 1, 4, 4), 0.5), ctx)
    with pytest.raises(ValueError, match="`y` contains NaN"):
        deq(torch.full((1, 1, 4, 4), float("nan")), ctx)
    with pytest.raises(ValueError, match="`context` must have shape"):
        deq(torch.zeros(1, 1, 4, 4), torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="`y` must have shape"):
        deq(torch.zeros(1, 2, 4, 4), ctx)
    with pytest.raises(ValueError, match="even"):
        deq(torch.zeros(1, 1, 3, 4), torch.zeros(1, 3, 3, 4))


def test_uniform_dequantizer_cells_and_log_q() -> None:
    deq = UniformDequantizer(num_bins=256)
    y = torch.randint(0, 256, (4, 3, 6, 5)).float()
    y[0, 0, 0, 0], y[0, 0, 0, 1] = 0.0, 255.0
    v, log_q = deq(y)
    assert bool((v >= y / 256).all()) and bool((v < (y + 1) / 256).all())
    assert torch.equal(deq.quantize(v), y)
    torch.testing.assert_close(log_q, torch.full((4,), 3 * 6 * 5 * math.log(256.0)))
    # quantize clamps to the data range
    assert deq.quantize(torch.tensor([-0.1, 1.0, 1.5])).tolist() == [0.0, 255.0, 255.0]


def test_uniform_bad_input() -> None:
    deq = UniformDequantizer()
    with pytest.raises(ValueError, match=r"multiply by 255"):
        deq(torch.rand(1, 1, 2, 2))
    with pytest.raises(ValueError, match=r"integer values in \[0, 255\]"):
        deq(torch.full((1, 1, 2, 2), 256.0))
    with pytest.raises(ValueError, match="NaN"):
        deq(torch.full((1, 1, 2, 2), float("nan")))
    with pytest.raises(ValueError, match="num_bins"):
        UniformDequantizer(num_bins=1)
