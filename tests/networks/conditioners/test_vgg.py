"""VGGConditioner: the paper's Table 5 structure, resolution-matched outputs, 2D/3D, lean, input-normalised."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from monai_cnf.networks.conditioners import VGGConditioner


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("num_levels", [1, 2, 3])
def test_output_shapes_and_channels(spatial_dims: int, num_levels: int) -> None:
    size = 16
    net = VGGConditioner(spatial_dims, in_channels=2, num_levels=num_levels, feature_channels=[4, 6, 8][:num_levels])
    feats = net(torch.randn(2, 2, *([size] * spatial_dims)))
    assert net.out_channels == [4, 6, 8][:num_levels]
    assert len(feats) == num_levels
    for level, h in enumerate(feats):
        assert tuple(h.shape) == (2, net.out_channels[level], *([size // 2 ** (level + 1)] * spatial_dims))


def test_default_channels_double_per_level() -> None:
    assert VGGConditioner(2, 3, num_levels=2).out_channels == [32, 64]
    assert VGGConditioner(2, 3, num_levels=3).out_channels == [32, 64, 128]
    assert VGGConditioner(2, 3, num_levels=2, feature_channels=5).out_channels == [5, 5]


def test_table5_layer_structure_for_two_levels() -> None:
    """Layers 1..7 of Table 5: block, pool, block, block, pool, block, block; outputs at layers 4 and 7."""
    net = VGGConditioner(2, in_channels=3, num_levels=2, feature_channels=(32, 64))
    kinds = []
    for layer in net.layers:
        if isinstance(layer, nn.MaxPool2d):
            assert layer.kernel_size == 2 and layer.stride == 2
            kinds.append("pool")
        else:
            norm, act, conv = layer  # block = [InstanceNorm, ReLU, conv 3x3]
            assert isinstance(norm, nn.InstanceNorm2d) and isinstance(act, nn.ReLU) and isinstance(conv, nn.Conv2d)
            assert conv.kernel_size == (3, 3) and conv.padding == (1, 1)
            kinds.append("block")
    assert kinds == ["block", "pool", "block", "block", "pool", "block", "block"]
    assert [i + 1 for i in net.output_indices] == [4, 7]  # Table 5 numbers layers from 1 (0 = input)
    assert net.layers[0][2].in_channels == 3 and net.layers[0][2].out_channels == 32
    assert net.layers[6][2].out_channels == 64

    x = torch.randn(1, 3, 32, 32)
    h = x
    manual = []
    for i, layer in enumerate(net.layers):
        h = layer(h)
        if i + 1 in (4, 7):
            manual.append(h)
    feats = net(x)
    assert tuple(feats[0].shape[-2:]) == (16, 16) and tuple(feats[1].shape[-2:]) == (8, 8)  # resolution /2 and /4
    for a, b in zip(feats, manual, strict=True):
        torch.testing.assert_close(a, b)


def test_invariant_to_per_channel_intensity_affine() -> None:
    """The first operation is an InstanceNorm: features do not change under x -> a*x + b per channel (a > 0)."""
    net = VGGConditioner(2, in_channels=3, num_levels=2, feature_channels=(4, 8)).double()
    for m in net.modules():
        if isinstance(m, nn.InstanceNorm2d):
            m.eps = 1e-12  # make the invariance exact up to float64 rounding
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    a = torch.tensor([2.0, 0.5, 3.0], dtype=torch.float64).view(1, 3, 1, 1)
    b = torch.tensor([0.1, -1.0, 5.0], dtype=torch.float64).view(1, 3, 1, 1)
    for f, g in zip(net(x), net(a * x + b), strict=True):
        torch.testing.assert_close(f, g)


def test_every_parameter_feeds_an_output() -> None:
    """Lean: no layer whose output is thrown away (every parameter gets a non-zero gradient)."""
    net = VGGConditioner(3, in_channels=1, num_levels=2, feature_channels=(3, 4))
    sum(h.square().sum() for h in net(torch.randn(1, 1, 8, 8, 8))).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def _trained_like(net: VGGConditioner) -> VGGConditioner:
    """Give BatchNorm non-trivial running statistics (as after training) and switch to inference."""
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(4, 3, 32, 32) * 2 + 0.5)
    return net.eval()


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("norm", ["batch", "none"])
def test_fixed_statistics_make_features_local(spatial_dims: int, norm: str) -> None:
    """Changing the input far outside a pixel's receptive field leaves that pixel's features unchanged."""
    net = VGGConditioner(spatial_dims, in_channels=3, num_levels=2, feature_channels=(4, 8), norm=norm)
    net = _trained_like(net) if spatial_dims == 2 else net.eval()
    size = 128 if spatial_dims == 2 else 64
    x = torch.rand(1, 3, *[size] * spatial_dims)
    far = x.clone()
    far[(..., *[slice(size - 16, None)] * spatial_dims)] = (
        torch.randn(*far[(..., *[slice(size - 16, None)] * spatial_dims)].shape) * 5
    )
    with torch.no_grad():
        before, after = net(x), net(far)
    for level, (a, b) in enumerate(zip(before, after, strict=True)):
        near = (..., *[slice(0, (size // 2) // 2 ** (level + 1))] * spatial_dims)  # the near half of the image
        torch.testing.assert_close(a[near], b[near], rtol=0, atol=0)
        assert not torch.equal(a, b)  # the change is seen where it is


def test_instance_norm_is_not_local() -> None:
    """The paper's InstanceNorm normalises with the statistics of whatever it is given: no locality (documented)."""
    net = VGGConditioner(2, in_channels=3, num_levels=2, feature_channels=(4, 8), norm="instance").eval()
    x = torch.rand(1, 3, 128, 128)
    far = x.clone()
    far[..., 112:, 112:] = 5.0
    with torch.no_grad():
        assert not torch.allclose(net(x)[1][..., :16, :16], net(far)[1][..., :16, :16])


def test_patch_features_equal_whole_image_features() -> None:
    """One model at every size: a crop's features equal the whole image's, away from the crop's own borders."""
    net = _trained_like(VGGConditioner(2, in_channels=3, num_levels=2, feature_channels=(4, 8), norm="batch"))
    x = torch.rand(1, 3, 192, 160)
    with torch.no_grad():
        whole, crop = net(x), net(x[..., 64:160, 32:128])  # a 96x96 crop at a multiple of 4
    for level, (w, c) in enumerate(zip(whole, crop, strict=True)):
        f = 2 ** (level + 1)
        m = 40 // f  # margin beyond the receptive field (< 40 pixels)
        torch.testing.assert_close(
            c[..., m : 96 // f - m, m : 96 // f - m], w[..., 64 // f + m : 160 // f - m, 32 // f + m : 128 // f - m]
        )


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="feature_channels"):
        VGGConditioner(2, 3, num_levels=3, feature_channels=(32, 64))
    with pytest.raises(ValueError, match="spatial_dims"):
        VGGConditioner(4, 3, num_levels=2)
    with pytest.raises(ValueError, match="num_levels"):
        VGGConditioner(2, 3, num_levels=0)
    with pytest.raises(ValueError, match="`x` must have shape"):
        VGGConditioner(2, 3, num_levels=1)(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="RandSpatialCropd"):
        VGGConditioner(2, 3, num_levels=2)(torch.zeros(1, 3, 4, 4))  # 1x1 at the deepest level
    assert len(VGGConditioner(2, 3, num_levels=2)(torch.zeros(1, 3, 8, 4))) == 2  # 2x1 at the deepest level: fine
    with pytest.raises(ValueError, match="norm"):
        VGGConditioner(2, 3, num_levels=2, norm="group")
    # fixed statistics need no minimum size (MONAI's verify_net_in_out feeds a 4x4 image with 2 levels)
    assert len(VGGConditioner(2, 3, num_levels=2, norm="batch").eval()(torch.zeros(1, 3, 4, 4))) == 2
