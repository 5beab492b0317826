"""Default subnetwork factory for coupling layers and priors (FrEIA-style ``subnet(in_channels, out_channels)``).

The conditioners package (``monai_cnf.networks.conditioners``) re-exports these names.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["ConvSubnet", "SubnetFactory", "conv_subnet_factory", "get_conv_type", "zero_init_"]

SubnetFactory = Callable[[int, int], nn.Module]
"""``subnet(in_channels, out_channels) -> nn.Module`` mapping ``(B, in, *spatial)`` to ``(B, out, *spatial)``."""

_CONV_TYPES: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


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


class ConvSubnet(nn.Sequential):
    """Glow's coupling network ``kxk conv -> ReLU -> 1x1 conv -> ReLU -> kxk conv``, last conv zero-initialised.

    With the last layer zero-initialised the coupling outputs shift 0 and log-scale 0, so every flow step
    starts as the identity (Kingma & Dhariwal, 2018; FrEIA's convention).

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3 (1 also works).
        in_channels: input channels (the passive half of the coupling plus the conditioning channels).
        out_channels: output channels (shift and scale of the active half).
        hidden_channels: width of the two hidden layers. Defaults to 64.
        kernel_size: size of the first and last kernel (odd). Defaults to 3.
        zero_init: zero-initialise the last conv. Defaults to True.

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


def conv_subnet_factory(spatial_dims: int, hidden_channels: int = 64, kernel_size: int = 3) -> SubnetFactory:
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
        return ConvSubnet(spatial_dims, in_channels, out_channels, hidden_channels, kernel_size)

    return factory
