"""Flow layer contract and the sequential container.

Every flow layer maps ``x`` to ``z`` with ``forward(x, cond=None) -> (z, logdet)``, where
``logdet = log|det dz/dx|`` has shape ``(B,)``, and undoes it with ``inverse(z, cond=None) -> x``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from torch import Tensor, nn

__all__ = ["FlowLayer", "FlowSequential", "check_cond", "check_input", "spatial_numel"]


def _shape(t: Tensor | None) -> str:
    return "None" if t is None else str(tuple(t.shape))


def check_input(name: str, x: Tensor, spatial_dims: int, channels: int | None = None) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(B, channels, *spatial)`` with ``spatial_dims`` spatial axes.

    Args:
        name: what to call the tensor in the message (e.g. ``"ActNorm input"``).
        x: the tensor to check.
        spatial_dims: expected number of spatial axes.
        channels: expected channel count, or None to skip that check. Defaults to None.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}.")
    if x.ndim != spatial_dims + 2:
        raise ValueError(
            f"{name} must have shape (B, C, *spatial) with {spatial_dims} spatial dims, got shape {_shape(x)}."
        )
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channels, got shape {_shape(x)} ({x.shape[1]} channels).")


def check_cond(name: str, x: Tensor, cond: Tensor | None, cond_channels: int) -> None:
    """Check the conditioning tensor of a layer acting on ``x``.

    A conditional layer (``cond_channels > 0``) needs ``cond`` of shape ``(B, cond_channels, *x.shape[2:])``;
    an unconditional one (``cond_channels == 0``) must not be given a ``cond``.

    Args:
        name: the layer's name for the message.
        x: the layer input ``(B, C, *spatial)``.
        cond: the conditioning features or None.
        cond_channels: number of conditioning channels the layer was built for (0: unconditional).

    Raises:
        ValueError: naming the expected and the received shape.
    """
    if cond_channels == 0:
        if cond is not None:
            raise ValueError(
                f"{name} is unconditional (cond_channels=0) but got cond of shape {_shape(cond)}; "
                "build it with cond_channels=<C> or pass cond=None."
            )
        return
    expected = (x.shape[0], cond_channels, *x.shape[2:])
    if cond is None or tuple(cond.shape) != expected:
        raise ValueError(
            f"{name} expects cond of shape (B, cond_channels, *spatial) = {expected} matching its input "
            f"{_shape(x)}, got {_shape(cond)}."
        )


class FlowLayer(nn.Module):
    """Base class of invertible layers: ``forward(x, cond=None) -> (z, logdet)``, ``inverse(z, cond=None) -> x``.

    Subclasses set ``spatial_dims`` and ``cond_channels`` (0 for layers that ignore ``cond``); ``conditional`` is
    True when the layer needs a ``cond``. Layers that cannot use a ``cond`` (ActNorm, InvConv, Squeeze) ignore it so
    that a :class:`FlowSequential` can pass one ``cond`` to every layer.
    """

    spatial_dims: int
    cond_channels: int = 0

    @property
    def conditional(self) -> bool:
        """Whether the layer needs a conditioning tensor."""
        return self.cond_channels > 0

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError


class FlowSequential(FlowLayer):
    """A chain of flow layers; log-determinants add up and ``inverse`` runs the layers in reverse order.

    .. math:: z = f_n \\circ \\dots \\circ f_1(x), \\quad \\log|\\det J| = \\sum_i \\log|\\det J_{f_i}|

    Every layer receives the same ``cond`` (one feature map at the layers' resolution).

    Args:
        layers: flow layers, in forward order (as positional arguments or one iterable).

    >>> import torch
    >>> from monai_cnf.networks.flows import ActNorm, InvConv
    >>> seq = FlowSequential(ActNorm(4, spatial_dims=2), InvConv(4, spatial_dims=2))
    >>> x = torch.randn(2, 4, 8, 8)
    >>> z, logdet = seq(x)
    >>> torch.allclose(seq.inverse(z), x, atol=1e-5), logdet.shape
    (True, torch.Size([2]))
    """

    def __init__(self, *layers: FlowLayer | Iterable[FlowLayer]) -> None:
        super().__init__()
        if len(layers) == 1 and not isinstance(layers[0], nn.Module):
            layers = tuple(layers[0])  # type: ignore[arg-type]
        for i, layer in enumerate(layers):
            if not isinstance(layer, FlowLayer):
                raise TypeError(f"FlowSequential layer {i} must be a FlowLayer, got {type(layer).__name__}.")
        self.layers = nn.ModuleList(layers)  # type: ignore[arg-type]
        dims = {layer.spatial_dims for layer in self.layers}
        if len(dims) > 1:
            raise ValueError(f"all FlowSequential layers must share spatial_dims, got {sorted(dims)}.")
        self.spatial_dims = dims.pop() if dims else 2
        channels = {layer.cond_channels for layer in self.layers if layer.cond_channels > 0}
        if len(channels) > 1:
            raise ValueError(f"conditional FlowSequential layers must share cond_channels, got {sorted(channels)}.")
        self.cond_channels = channels.pop() if channels else 0

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int) -> FlowLayer:
        return self.layers[index]  # type: ignore[return-value]

    def _layer_cond(self, layer: FlowLayer, cond: Tensor | None) -> Tensor | None:
        # layers that cannot use a cond (structural ones) are simply not given it
        return cond if layer.cond_channels > 0 else None

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.cond_channels == 0 and cond is not None:
            raise ValueError(
                f"FlowSequential has no conditional layer but got cond of shape {_shape(cond)}; pass cond=None."
            )
        logdet = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, ld = layer(x, self._layer_cond(layer, cond))  # type: ignore[operator]
            logdet = logdet + ld
        return x, logdet

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        if self.cond_channels == 0 and cond is not None:
            raise ValueError(
                f"FlowSequential has no conditional layer but got cond of shape {_shape(cond)}; pass cond=None."
            )
        for layer in reversed(self.layers):
            z = layer.inverse(z, self._layer_cond(layer, cond))  # type: ignore[operator]
        return z


def spatial_numel(x: Tensor | Sequence[int]) -> int:
    """Number of spatial elements of ``(B, C, *spatial)`` (a tensor or a shape)."""
    shape = x.shape if isinstance(x, Tensor) else x
    n = 1
    for s in shape[2:]:
        n *= int(s)
    return n
