"""The default coupling subnet: identity start, concat-free conditioning and the recompute-in-backward path."""

from __future__ import annotations

import pytest
import torch

from monai_cnf.networks.conditioners.subnets import ConvSubnet, conv_subnet_factory, get_conv_type


@pytest.mark.parametrize("sd", [2, 3])
def test_last_conv_zero_initialised(sd: int) -> None:
    net = conv_subnet_factory(sd, hidden_channels=8)(5, 4)
    assert isinstance(net[0], get_conv_type(sd))
    out = net(torch.randn(2, 5, *([4] * sd)))
    assert out.shape == (2, 4, *([4] * sd))
    assert torch.count_nonzero(out) == 0


@pytest.mark.parametrize("sd", [2, 3])
@pytest.mark.parametrize("with_x", [True, False])
def test_forward_split_equals_concat_and_recompute_gives_same_gradients(sd: int, with_x: bool, perturb) -> None:
    torch.manual_seed(0)
    n_x, n_c = (3 if with_x else 0), 4
    ref = perturb(ConvSubnet(sd, n_x + n_c, 6, hidden_channels=8, recompute_hidden=False).double(), std=1.0)
    fast = ConvSubnet(sd, n_x + n_c, 6, hidden_channels=8, recompute_hidden=True).double()
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(2, n_x, *([5] * sd), dtype=torch.float64, requires_grad=True) if with_x else None
    c = torch.randn(2, n_c, *([5] * sd), dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 6, *([5] * sd), dtype=torch.float64)
    out_ref = ref(torch.cat([x, c], 1) if with_x else c)
    out_fast = fast.forward_split(x, c)
    torch.testing.assert_close(out_fast, out_ref, atol=1e-12, rtol=0)
    assert out_ref.abs().max() > 0.1
    inputs = [c] + ([x] if with_x else [])
    g_ref = torch.autograd.grad((out_ref * weight).sum(), [*inputs, *ref.parameters()])
    g_fast = torch.autograd.grad((out_fast * weight).sum(), [*inputs, *fast.parameters()])
    for a, b in zip(g_fast, g_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_lean_backward_passes_gradcheck(perturb) -> None:
    torch.manual_seed(0)
    net = perturb(ConvSubnet(2, 3, 2, hidden_channels=4).double(), std=1.0)
    x = torch.randn(1, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    c = torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(net.forward_split, (x, c))
    fixed = c.detach()  # fixed features: the x-only input-gradient path
    assert torch.autograd.gradcheck(lambda v: net.forward_split(v, fixed), (x,))


def test_subnet_argument_errors() -> None:
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        ConvSubnet(2, 3, 4, kernel_size=2)
    with pytest.raises(ValueError, match="spatial_dims"):
        conv_subnet_factory(4)
