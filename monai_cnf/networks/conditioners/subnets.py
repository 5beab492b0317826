"""Default subnetwork factory for coupling layers and priors (FrEIA-style ``subnet(in_channels, out_channels)``).

The conditioners package (``monai_cnf.networks.conditioners``) re-exports these names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ConvSubnet", "SubnetFactory", "conv_subnet_factory", "get_conv_type", "zero_init_"]

SubnetFactory = Callable[[int, int], nn.Module]
"""``subnet(in_channels, out_channels) -> nn.Module`` mapping ``(B, in, *spatial)`` to ``(B, out, *spatial)``."""

_CONV_TYPES: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONV_FNS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def get_conv_type(spatial_dims: int) -> type[nn.Module]:
    """Return ``nn.Conv{spatial_dims}d`` (torch's own classes, so that ``import monai`` stays off this path).

    Args:
        spatial_dims: number of spatial dimensions, 1, 2 or 3.

    Raises:
        ValueError: when ``spatial_dims`` is not 1, 2 or 3.

    >>> import torch
    >>> get_conv_type(3).__name__
    'Conv3d'
    """
    if spatial_dims not in _CONV_TYPES:
        raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims!r}; use 2 for images and 3 for volumes.")
    return _CONV_TYPES[spatial_dims]


def zero_init_(module: nn.Module) -> nn.Module:
    """Set a layer's ``weight`` and ``bias`` to zero in place (so a coupling or prior starts as the identity / N(0, 1)).

    Args:
        module: a module with ``weight`` and optionally ``bias`` parameters.

    Returns:
        The same module.
    """
    with torch.no_grad():
        module.weight.zero_()  # type: ignore[operator]
        if getattr(module, "bias", None) is not None:
            module.bias.zero_()  # type: ignore[union-attr]
    return module


class _RecomputedTail(torch.autograd.Function):
    """``conv_k(relu(conv_1x1(h1)))`` that saves only ``h1`` and recomputes the second hidden map in backward.

    The second hidden map (``hidden_channels`` wide) would otherwise be kept for the backward pass of every coupling;
    recomputing it costs one 1x1 conv (about 5% of a flow step's training FLOPs) and removes a third of the
    activation memory of a training step. Only first-order gradients are supported (no double backward).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, h1: Tensor, w2: Tensor, b2: Tensor | None, w3: Tensor, b3: Tensor | None, padding: int
    ) -> Tensor:
        conv = _CONV_FNS[h1.ndim - 2]
        h2 = torch.relu_(conv(h1, w2, b2))
        out = conv(h2, w3, b3, padding=padding)
        ctx.save_for_backward(h1, w2, b2, w3)
        ctx.padding = padding
        ctx.has_b3 = b3 is not None
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        h1, w2, b2, w3 = ctx.saved_tensors
        d = h1.ndim - 2
        h2 = torch.relu_(_CONV_FNS[d](h1, w2, b2))
        need = ctx.needs_input_grad
        common = {"stride": [1] * d, "dilation": [1] * d, "transposed": False, "output_padding": [0] * d, "groups": 1}
        g_h2, g_w3, g_b3 = torch.ops.aten.convolution_backward(
            grad_out, h2, w3, [w3.shape[0]], padding=[ctx.padding] * d, output_mask=[True, need[3], need[4]], **common
        )
        g_h2 = g_h2.masked_fill_(h2 <= 0, 0.0)
        g_h1, g_w2, g_b2 = torch.ops.aten.convolution_backward(
            g_h2,
            h1,
            w2,
            [w2.shape[0]],
            padding=[0] * d,
            output_mask=[need[0], need[1], need[2] and b2 is not None],
            **common,
        )
        return g_h1, g_w2, g_b2, g_w3, g_b3 if ctx.has_b3 else None, None


class ConvSubnet(nn.Sequential):
    """Glow's coupling network ``kxk conv -> ReLU -> 1x1 conv -> ReLU -> kxk conv``, last conv zero-initialised.

    With the last layer zero-initialised the coupling outputs shift 0 and log-scale 0, so every flow step
    starts as the identity (Kingma & Dhariwal, 2018; FrEIA's convention).

    :meth:`forward_split` computes ``net(torch.cat([x, cond], 1))`` without building the concatenation: the first
    conv is applied to ``x`` and ``cond`` with the matching slices of its weight and the results are added. Autograd
    then keeps no per-step copy of the (wide) conditioning features: every step of a level shares the one ``cond``
    tensor, which saves ``cond_channels`` activation maps per step for the backward pass.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3 (1 also works).
        in_channels: input channels (the passive half of the coupling plus the conditioning channels).
        out_channels: output channels (shift and scale of the active half).
        hidden_channels: width of the two hidden layers. Defaults to 64.
        kernel_size: size of the first and last kernel (odd). Defaults to 3.
        zero_init: zero-initialise the last conv. Defaults to True.
        recompute_hidden: when training, recompute the second hidden map in the backward pass instead of storing it
            (about +5% step time, about a third less activation memory; first-order gradients only). Defaults to True.

    >>> import torch
    >>> net = ConvSubnet(spatial_dims=2, in_channels=3, out_channels=4, hidden_channels=8)
    >>> net(torch.randn(2, 3, 8, 8)).shape
    torch.Size([2, 4, 8, 8])
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        hidden_channels: int = 64,
        kernel_size: int = 3,
        zero_init: bool = True,
        recompute_hidden: bool = True,
    ) -> None:
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd so that the spatial size is kept, got {kernel_size}.")
        if in_channels < 1 or out_channels < 1 or hidden_channels < 1:
            raise ValueError(
                f"in_channels, out_channels and hidden_channels must be positive, got {in_channels}, "
                f"{out_channels}, {hidden_channels}."
            )
        conv = get_conv_type(spatial_dims)
        pad = kernel_size // 2
        last = conv(hidden_channels, out_channels, kernel_size, padding=pad)
        if zero_init:
            zero_init_(last)
        super().__init__(
            conv(in_channels, hidden_channels, kernel_size, padding=pad),
            # in-place ReLU is safe after a conv (conv backward needs its input, not its output) and saves memory
            nn.ReLU(inplace=True),
            conv(hidden_channels, hidden_channels, 1),
            nn.ReLU(inplace=True),
            last,
        )
        self.spatial_dims = spatial_dims
        self.recompute_hidden = recompute_hidden

    def _tail(self, h1: Tensor) -> Tensor:
        """Everything after the first conv + ReLU."""
        mid, last = self[2], self[4]
        if self.recompute_hidden and torch.is_grad_enabled():
            return _RecomputedTail.apply(h1, mid.weight, mid.bias, last.weight, last.bias, last.padding[0])
        return last(torch.relu_(mid(h1)))

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return self._tail(torch.relu_(self[0](x)))

    def forward_split(self, x: Tensor | None, cond: Tensor) -> Tensor:
        """Same as ``self(torch.cat([x, cond], dim=1))`` (``x`` may be None: ``self(cond)``), without the concat.

        Args:
            x: ``(B, C_x, *spatial)`` or None.
            cond: ``(B, C_cond, *spatial)``; ``C_x + C_cond`` must equal the subnet's ``in_channels``.
        """
        first = self[0]
        n = 0 if x is None else x.shape[1]
        weight = first.weight  # type: ignore[union-attr]
        conv = _CONV_FNS[self.spatial_dims]
        pad = first.padding  # type: ignore[union-attr]
        h = conv(cond, weight[:, n:], first.bias, padding=pad)  # type: ignore[union-attr]
        if x is not None:
            # in place is safe: a conv's output is not saved for its backward
            h = h.add_(conv(x, weight[:, :n], None, padding=pad))
        return self._tail(torch.relu_(h))


def conv_subnet_factory(
    spatial_dims: int, hidden_channels: int = 64, kernel_size: int = 3, recompute_hidden: bool = True
) -> SubnetFactory:
    """Return a FrEIA-style factory ``subnet(in_channels, out_channels) -> ConvSubnet``.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        hidden_channels: hidden width of each subnet. Defaults to 64.
        kernel_size: first/last kernel size. Defaults to 3.

    >>> import torch
    >>> make = conv_subnet_factory(spatial_dims=3, hidden_channels=8)
    >>> make(2, 4)(torch.randn(1, 2, 4, 4, 4)).shape
    torch.Size([1, 4, 4, 4, 4])
    """
    get_conv_type(spatial_dims)  # validate early

    def factory(in_channels: int, out_channels: int) -> nn.Module:
        return ConvSubnet(spatial_dims, in_channels, out_channels, hidden_channels, kernel_size, True, recompute_hidden)

    return factory
