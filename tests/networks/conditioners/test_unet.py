"""UNetConditioner: shapes, one model at every size (locality with fixed statistics), errors, use in the models."""

from __future__ import annotations

import pytest
import torch

from monai_cnf.networks import ConditionalNormalizingFlow, FactoredBaseline
from monai_cnf.networks.conditioners import UNetConditioner

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_output_shapes_and_channels(spatial_dims: int) -> None:
    net = UNetConditioner(spatial_dims, in_channels=3, num_levels=2, feature_channels=(4, 8), channels=(4, 8, 8))
    size = 16 if spatial_dims == 2 else 8
    feats = net(torch.rand(2, 3, *[size] * spatial_dims))
    assert [tuple(h.shape) for h in feats] == [(2, 4, *[size // 2] * spatial_dims), (2, 8, *[size // 4] * spatial_dims)]
    assert net.out_channels == [4, 8]


def _trained_like(net: UNetConditioner, spatial_dims: int = 2) -> UNetConditioner:
    """BatchNorm with non-trivial running statistics, then eval(): the state a trained model is used in."""
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(4, 3, *[32] * spatial_dims) * 2 + 0.5)
    return net.eval()


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("norm", ["batch", "none"])
def test_fixed_statistics_make_features_local(spatial_dims: int, norm: str) -> None:
    """Changing the input far outside a pixel's receptive field leaves that pixel's features unchanged."""
    net = UNetConditioner(spatial_dims, 3, num_levels=2, feature_channels=(4, 8), channels=(4, 8, 8), norm=norm)
    net = _trained_like(net, spatial_dims)
    size = 160 if spatial_dims == 2 else 96
    x = torch.rand(1, 3, *[size] * spatial_dims)
    far = x.clone()
    corner = (..., *[slice(size - 16, None)] * spatial_dims)
    far[corner] = torch.randn(*far[corner].shape) * 5
    with torch.no_grad():
        before, after = net(x), net(far)
    for level, (a, b) in enumerate(zip(before, after, strict=True)):
        near = (..., *[slice(0, (size // 2) // 2 ** (level + 1))] * spatial_dims)  # the near half of the image
        torch.testing.assert_close(a[near], b[near], rtol=0, atol=0)
        assert not torch.equal(a, b)  # the change is seen where it is


def test_instance_norm_is_not_local() -> None:
    net = UNetConditioner(2, 3, num_levels=2, feature_channels=(4, 8), channels=(4, 8, 8), norm="instance").eval()
    x = torch.rand(1, 3, 128, 128)
    far = x.clone()
    far[..., 112:, 112:] = 5.0
    with torch.no_grad():
        assert not torch.allclose(net(x)[1][..., :16, :16], net(far)[1][..., :16, :16])


def test_patch_features_equal_whole_image_features() -> None:
    """One model at every size: a crop's features equal the whole image's, away from the crop's own borders."""
    net = _trained_like(UNetConditioner(2, 3, num_levels=2, feature_channels=(4, 8), channels=(4, 8, 8)))
    x = torch.rand(1, 3, 256, 224)
    with torch.no_grad():
        whole, crop = net(x), net(x[..., 64:192, 48:176])  # a 128x128 crop at a multiple of 4
    for level, (w, c) in enumerate(zip(whole, crop, strict=True)):
        f = 2 ** (level + 1)
        m = 48 // f  # margin beyond the receptive field
        torch.testing.assert_close(
            c[..., m : 128 // f - m, m : 128 // f - m],
            w[..., 64 // f + m : 192 // f - m, 48 // f + m : 176 // f - m],
        )


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="downsamplings"):
        UNetConditioner(2, 3, num_levels=1, channels=(4, 8, 16))
    with pytest.raises(ValueError, match="at least two"):
        UNetConditioner(2, 3, num_levels=2, channels=(4,))
    with pytest.raises(ValueError, match="spatial_dims"):
        UNetConditioner(4, 3, num_levels=2)
    with pytest.raises(ValueError, match="norm"):
        UNetConditioner(2, 3, num_levels=2, norm="group")
    net = UNetConditioner(2, 3, num_levels=2, channels=(4, 8))
    with pytest.raises(ValueError, match="`x` must have shape"):
        net(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="DivisiblePadd"):
        net(torch.zeros(1, 3, 10, 8))


@pytest.mark.parametrize("model", ["cnf", "factored"])
def test_named_in_both_models(model: str) -> None:
    """`conditioner="unet"` builds the same conditioner in the CNF and its factored baseline (matched models)."""
    kwargs = {"feature_channels": (4, 8), "channels": (4, 8, 8)}
    if model == "cnf":
        net = ConditionalNormalizingFlow(
            2,
            in_channels=3,
            out_channels=1,
            num_levels=2,
            num_steps=1,
            hidden_channels=8,
            conditioner="unet",
            conditioner_kwargs=kwargs,
        )
    else:
        net = FactoredBaseline(
            2,
            in_channels=3,
            out_channels=1,
            num_levels=2,
            hidden_channels=8,
            conditioner="unet",
            conditioner_kwargs=kwargs,
        )
    assert isinstance(net.conditioner, UNetConditioner)
    x, y = torch.rand(2, 3, 16, 16), (torch.rand(2, 1, 16, 16) > 0.5).float()
    bpd = net.bits_per_dim(y, x)
    assert bpd.shape == (2,) and torch.isfinite(bpd).all()
    bpd.mean().backward()
    # the layers on top of the conditioner start at zero (Glow's init), so its gradients are zero at step 0: after
    # one step every conditioner parameter must get a non-zero gradient (the features reach the loss)
    torch.optim.Adam(net.parameters(), lr=1e-2).step()
    net.zero_grad()
    net.bits_per_dim(y, x).mean().backward()
    for name, p in net.conditioner.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    with pytest.raises(ValueError, match="scale=1"):
        type(net)(2, in_channels=3, out_channels=1, scale=2, conditioner="unet")
