"""RRDBConditioner: ESRGAN blocks computed as defined, per-level maps at the flow's resolutions, lean."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from monai_cnf.networks.conditioners import RRDB, ResidualDenseBlock, RRDBConditioner


def test_residual_dense_block_matches_definition() -> None:
    block = ResidualDenseBlock(2, channels=4, growth_channels=3).double()
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    feats = [x]
    for conv in block.convs[:4]:
        feats.append(F.leaky_relu(F.conv2d(torch.cat(feats, 1), conv.weight, conv.bias, padding=1), 0.2))
    last = block.convs[4]
    expected = x + 0.2 * F.conv2d(torch.cat(feats, 1), last.weight, last.bias, padding=1)
    torch.testing.assert_close(block(x), expected)
    assert [c.in_channels for c in block.convs] == [4, 7, 10, 13, 16]
    assert [c.out_channels for c in block.convs] == [3, 3, 3, 3, 4]


def test_rrdb_outer_residual() -> None:
    rrdb = RRDB(3, channels=2, growth_channels=2).double()
    x = torch.randn(1, 2, 4, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(rrdb(x), x + 0.2 * rrdb.blocks(x))
    assert len(rrdb.blocks) == 3


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("num_levels", [1, 2, 3])
@pytest.mark.parametrize("scale", [1, 2, 4])
def test_levels_match_flow_resolutions(spatial_dims: int, num_levels: int, scale: int) -> None:
    lr = 8
    net = RRDBConditioner(
        spatial_dims,
        3,
        num_levels,
        num_blocks=1,
        growth_channels=2,
        feature_channels=[4, 5, 6][:num_levels],
        scale=scale,
    )
    feats = net(torch.randn(1, 3, *([lr] * spatial_dims)))
    assert net.out_channels == [4, 5, 6][:num_levels]
    for level, h in enumerate(feats):
        size = lr * scale // 2 ** (level + 1)  # the HR target's size / 2**(l+1)
        assert tuple(h.shape) == (1, net.out_channels[level], *([size] * spatial_dims))


def test_2x_sr_first_level_is_the_trunk_output() -> None:
    """For 2x SR level 1 is at LR resolution: it is the trunk output itself, no extra conv."""
    net = RRDBConditioner(2, 3, 2, num_blocks=2, growth_channels=4, feature_channels=8, scale=2).double()
    assert len(net.to_levels[0]) == 0
    x = torch.randn(1, 3, 6, 6, dtype=torch.float64)
    h = net.conv_first(x)
    trunk = h + net.conv_body(net.body(h))
    torch.testing.assert_close(net(x)[0], trunk)


def test_every_parameter_feeds_an_output() -> None:
    net = RRDBConditioner(2, 3, 3, num_blocks=1, growth_channels=2, feature_channels=4, scale=4)
    sum(h.square().sum() for h in net(torch.randn(1, 3, 8, 8))).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="scale"):
        RRDBConditioner(2, 3, 2, num_blocks=1, scale=3)
    with pytest.raises(ValueError, match="feature_channels"):
        RRDBConditioner(2, 3, 2, num_blocks=1, feature_channels=(8, 8, 8))
    with pytest.raises(ValueError, match="`x` must have shape"):
        RRDBConditioner(2, 3, 1, num_blocks=1, feature_channels=4)(torch.zeros(1, 1, 8, 8))
