"""Activation normalisation (Glow's ActNorm) with data-dependent initialisation."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .base import FlowLayer, check_input, spatial_numel

__all__ = ["ActNorm"]


class ActNorm(FlowLayer):
    """Per-channel affine map with data-dependent initialisation (Kingma & Dhariwal, 2018).

    .. math:: z = (x + b) \\odot e^{s}, \\qquad \\log|\\det J| = N_{spatial} \\sum_c s_c

    On the first forward pass in training mode, ``b`` and ``s`` are set so that the batch's output has zero mean
    and unit variance per channel. The ``initialized`` flag is a registered buffer, so a module loaded from a
    ``state_dict`` keeps its learned statistics and is not re-initialised. Inside a ``torch.distributed`` process
    group the mean and variance are those of the global batch (all-reduced over the ranks, which must all run that
    first pass together, as data-parallel training does), so every rank starts from the same values.

    Args:
        num_channels: number of channels ``C``.
        spatial_dims: number of spatial dimensions, 2 or 3. Defaults to 2.
        eps: added to the standard deviation at initialisation. Defaults to 1e-6.

    >>> import torch
    >>> layer = ActNorm(3, spatial_dims=2)
    >>> z, logdet = layer(torch.randn(4, 3, 8, 8) * 5 + 2)   # training mode: initialises on this batch
    >>> bool(layer.initialized), round(float(z.detach().std()), 1)
    (True, 1.0)
    """

    def __init__(self, num_channels: int, spatial_dims: int = 2, eps: float = 1e-6) -> None:
        super().__init__()
        if num_channels < 1:
            raise ValueError(f"num_channels must be positive, got {num_channels}.")
        self.spatial_dims = spatial_dims
        self.num_channels = num_channels
        self.eps = eps
        shape = (1, num_channels) + (1,) * spatial_dims
        self.bias = nn.Parameter(torch.zeros(shape))
        self.log_scale = nn.Parameter(torch.zeros(shape))
        self.register_buffer("initialized", torch.tensor(False))
        # Python-side mirror of the buffer once it is known to be True: avoids a device sync per forward on GPU.
        # Reset whenever a state_dict is loaded, so the buffer stays the single source of truth.
        self._known_initialized = False

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self._known_initialized = False
        super()._load_from_state_dict(*args, **kwargs)

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set bias and log-scale from the per-channel mean and standard deviation of ``x`` ``(B, C, *spatial)``."""
        dims = [0, *range(2, x.ndim)]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            mean = _global_mean(x, dims)
            std = _global_mean((x - mean) ** 2, dims).sqrt()
        else:
            mean = x.mean(dim=dims, keepdim=True)
            std = x.std(dim=dims, keepdim=True, unbiased=False)
        self.bias.copy_(-mean)
        self.log_scale.copy_(-torch.log(std + self.eps))
        self.initialized.fill_(True)
        self._known_initialized = True

    def maybe_initialize(self, x: Tensor) -> None:
        """Run :meth:`initialize` on ``x`` if the module is training and not initialised yet."""
        if not self.training or self._known_initialized:
            return
        if bool(self.initialized):
            self._known_initialized = True
        else:
            self.initialize(x)

    def affine(self) -> tuple[Tensor, Tensor]:
        """Return ``(scale, shift)`` with ``z = x * scale + shift``, each ``(1, C, 1, ...)``."""
        scale = self.log_scale.exp()
        return scale, self.bias * scale

    def logdet(self, x: Tensor) -> Tensor:
        """``N_spatial * sum(log_scale)`` broadcast to ``(B,)``."""
        return (self.log_scale.sum() * spatial_numel(x)).expand(x.shape[0])

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_input("ActNorm input", x, self.spatial_dims, self.num_channels)
        self.maybe_initialize(x)
        scale, shift = self.affine()
        return torch.addcmul(shift, x, scale), self.logdet(x)

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        check_input("ActNorm input", z, self.spatial_dims, self.num_channels)
        return torch.addcmul(-self.bias, z, torch.exp(-self.log_scale))


def _global_mean(x: Tensor, dims: list[int]) -> Tensor:
    """Per-channel mean over ``dims`` of the union of every rank's ``x`` (all-reduced sum and count)."""
    total = torch.cat([x.sum(dim=dims).reshape(-1), x.new_tensor([x.numel() / x.shape[1]])])
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    shape = [1] * x.ndim
    shape[1] = x.shape[1]
    return (total[:-1] / total[-1]).reshape(shape)
