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


def _conv_backward(
    grad: Tensor, inp: Tensor, weight: Tensor, has_bias: bool, padding: int, mask: tuple[bool, bool, bool]
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    d = inp.ndim - 2
    return torch.ops.aten.convolution_backward(
        grad,
        inp,
        weight,
        [weight.shape[0]] if has_bias else None,
        stride=[1] * d,
        padding=[padding] * d,
        dilation=[1] * d,
        transposed=False,
        output_padding=[0] * d,
        groups=1,
        output_mask=[mask[0], mask[1], mask[2] and has_bias],
    )


class _ConvSubnetFunction(torch.autograd.Function):
    """``conv_k(relu(conv_1(relu(conv_k([x, cond])))))`` with a lean backward.

    Saves only ``x`` and ``cond`` (not their concatenation: every step of a level shares the one ``cond`` tensor,
    and ``x`` is a view of the coupling input that is kept anyway) and the first hidden map; the concatenation is
    rebuilt and, with ``recompute``, the second hidden map recomputed in the backward pass. When ``cond`` needs no
    gradient (fixed features), the input gradient is computed for the ``x`` channels only. First-order only.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor | None,
        cond: Tensor,
        w1: Tensor,
        b1: Tensor | None,
        w2: Tensor,
        b2: Tensor | None,
        w3: Tensor,
        b3: Tensor | None,
        padding: int,
        recompute: bool,
    ) -> Tensor:
        conv = _CONV_FNS[cond.ndim - 2]
        inp = cond if x is None else torch.cat([x, cond], dim=1)
        h1 = torch.relu_(conv(inp, w1, b1, padding=padding))
        h2 = torch.relu_(conv(h1, w2, b2))
        out = conv(h2, w3, b3, padding=padding)
        ctx.save_for_backward(x, cond, h1, w1, w2, b2, w3, None if recompute else h2)
        ctx.padding = padding
        ctx.biases = (b1 is not None, b2 is not None, b3 is not None)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, cond, h1, w1, w2, b2, w3, h2 = ctx.saved_tensors
        need = ctx.needs_input_grad
        pad, (has_b1, has_b2, has_b3) = ctx.padding, ctx.biases
        if h2 is None:
            h2 = torch.relu_(_CONV_FNS[h1.ndim - 2](h1, w2, b2))
        g_h2, g_w3, g_b3 = _conv_backward(grad_out, h2, w3, has_b3, pad, (True, need[6], need[7]))
        g_h2 = torch.ops.aten.threshold_backward(g_h2, h2, 0)
        del h2
        g_h1, g_w2, g_b2 = _conv_backward(g_h2, h1, w2, has_b2, 0, (True, need[4], need[5]))
        del g_h2
        g_h1 = torch.ops.aten.threshold_backward(g_h1, h1, 0)
        need_x = x is not None and need[0]
        inp = cond if x is None else torch.cat([x, cond], dim=1)
        g_inp, g_w1, g_b1 = _conv_backward(g_h1, inp, w1, has_b1, pad, (need[1], need[2], need[3]))
        g_x = g_cond = None
        if need[1]:
            n = 0 if x is None else x.shape[1]
            g_x, g_cond = (g_inp[:, :n] if need_x else None), g_inp[:, n:]
        elif need_x:  # fixed features: the input gradient of the x channels only
            g_x = _conv_backward(g_h1, x, w1[:, : x.shape[1]].contiguous(), False, pad, (True, False, False))[0]
        return g_x, g_cond, g_w1, g_b1, g_w2, g_b2, g_w3, g_b3, None, None


class ConvSubnet(nn.Sequential):
    """Glow's coupling network ``kxk conv -> ReLU -> 1x1 conv -> ReLU -> kxk conv``, last conv zero-initialised.

    With the last layer zero-initialised the coupling outputs shift 0 and log-scale 0, so every flow step
    starts as the identity (Kingma & Dhariwal, 2018; FrEIA's convention).

    :meth:`forward_split` computes ``net(torch.cat([x, cond], 1))``. While training it runs as one autograd function
    with a lean backward pass: it stores neither the concatenation (every step of a level shares the one ``cond``
    tensor; ``x`` is kept by the coupling anyway) nor, with ``recompute_hidden``, the second hidden map, and when
    ``cond`` needs no gradient (fixed features) it skips the input gradient of the ``cond`` channels. Per flow step
    this keeps one ``hidden_channels``-wide map for backward instead of two plus the ``cond``-wide concatenation.
    Without grad (sampling, evaluation) it is the plain sequential network.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3 (1 also works).
        in_channels: input channels (the passive half of the coupling plus the conditioning channels).
        out_channels: output channels (shift and scale of the active half).
        hidden_channels: width of the two hidden layers. Defaults to 64.
        kernel_size: size of the first and last kernel (odd). Defaults to 3.
        zero_init: zero-initialise the last conv. Defaults to True.
        recompute_hidden: when training, recompute the second hidden map (one 1x1 conv) in the backward pass instead
            of storing it: a few % more step time for about a third less activation memory. Defaults to True.

    Note:
        The training path supports first-order gradients only (no double backward / ``create_graph``).

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

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return self.forward_split(None, x)

    def forward_split(self, x: Tensor | None, cond: Tensor) -> Tensor:
        """Same as ``self(torch.cat([x, cond], dim=1))`` (``x`` may be None: ``self(cond)``).

        While training, the concatenation is not stored for the backward pass (see :class:`ConvSubnet`).

        Args:
            x: ``(B, C_x, *spatial)`` or None.
            cond: ``(B, C_cond, *spatial)``; ``C_x + C_cond`` must equal the subnet's ``in_channels``.
        """
        first, mid, last = self[0], self[2], self[4]
        if not torch.is_grad_enabled():
            inp = cond if x is None else torch.cat([x, cond], dim=1)
            return last(torch.relu_(mid(torch.relu_(first(inp)))))
        return _ConvSubnetFunction.apply(
            x,
            cond,
            first.weight,
            first.bias,
            mid.weight,
            mid.bias,
            last.weight,
            last.bias,
            first.padding[0],
            self.recompute_hidden,
        )


def conv_subnet_factory(
    spatial_dims: int, hidden_channels: int = 64, kernel_size: int = 3, recompute_hidden: bool = True
) -> SubnetFactory:
    """Return a FrEIA-style factory ``subnet(in_channels, out_channels) -> ConvSubnet``.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        hidden_channels: hidden width of each subnet. Defaults to 64.
        kernel_size: first/last kernel size. Defaults to 3.
        recompute_hidden: see :class:`ConvSubnet`. Defaults to True.

    >>> import torch
    >>> make = conv_subnet_factory(spatial_dims=3, hidden_channels=8)
    >>> make(2, 4)(torch.randn(1, 2, 4, 4, 4)).shape
    torch.Size([1, 4, 4, 4, 4])
    """
    get_conv_type(spatial_dims)  # validate early

    def factory(in_channels: int, out_channels: int) -> nn.Module:
        return ConvSubnet(spatial_dims, in_channels, out_channels, hidden_channels, kernel_size, True, recompute_hidden)

    return factory
