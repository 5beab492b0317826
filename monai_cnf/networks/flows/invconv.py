"""Invertible 1x1 (1x1x1) convolution, LU-parametrised or as a plain matrix."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import FlowLayer, check_input, spatial_numel

__all__ = ["InvConv", "conv1x1"]

_CONV_FNS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def conv1x1(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Apply the channel-mixing matrix ``weight`` ``(C_out, C_in)`` at every position of ``x`` ``(B, C_in, *spatial)``.

    Args:
        x: input tensor.
        weight: matrix ``(C_out, C_in)``.
        bias: optional ``(C_out,)`` bias. Defaults to None.
    """
    spatial_dims = x.ndim - 2
    kernel = weight.reshape(*weight.shape, *([1] * spatial_dims))
    return _CONV_FNS[spatial_dims](x, kernel, bias)


class InvConv(FlowLayer):
    """Invertible 1x1 convolution (Glow), optionally LU-decomposed.

    .. math:: z_{:, p} = W x_{:, p}, \\qquad \\log|\\det J| = N_{spatial} \\log|\\det W|

    With ``lu=True`` (default), :math:`W = P L (U + \\mathrm{diag}(\\mathrm{sign}(s) e^{\\log|s|}))` with a fixed
    permutation ``P`` and fixed ``sign(s)`` (buffers), unit lower-triangular ``L``, strictly upper ``U`` and
    ``log|s|`` learned, so :math:`\\log|\\det W| = \\sum \\log|s|` costs O(C). The inverse uses two triangular
    solves, computed once per call. With ``lu=False``, ``W`` is a free matrix, ``slogdet`` gives the log-determinant
    and ``inv`` its inverse (once per call). ``W`` is initialised as a random orthogonal matrix.

    Args:
        num_channels: number of channels ``C``.
        spatial_dims: number of spatial dimensions, 2 or 3. Defaults to 2.
        lu: use the LU parametrisation. Defaults to True.

    >>> import torch
    >>> layer = InvConv(4, spatial_dims=3)
    >>> x = torch.randn(2, 4, 4, 4, 4)
    >>> z, logdet = layer(x)
    >>> torch.allclose(layer.inverse(z), x, atol=1e-5)
    True
    """

    def __init__(self, num_channels: int, spatial_dims: int = 2, lu: bool = True) -> None:
        super().__init__()
        if num_channels < 1:
            raise ValueError(f"num_channels must be positive, got {num_channels}.")
        self.spatial_dims = spatial_dims
        self.num_channels = num_channels
        self.lu = lu
        q = torch.linalg.qr(torch.randn(num_channels, num_channels, dtype=torch.float64))[0]
        if lu:
            p, lower, upper = torch.linalg.lu(q)
            s = torch.diagonal(upper)
            self.register_buffer("perm", p.float())
            self.register_buffer("sign_s", torch.sign(s).float())
            self.lower = nn.Parameter(torch.tril(lower, -1).float())
            self.upper = nn.Parameter(torch.triu(upper, 1).float())
            self.log_s = nn.Parameter(torch.log(torch.abs(s)).float())
        else:
            self.weight = nn.Parameter(q.float())

    def _lu_factors(self) -> tuple[Tensor, Tensor]:
        eye = torch.eye(self.num_channels, dtype=self.lower.dtype, device=self.lower.device)
        lower = torch.tril(self.lower, -1) + eye
        upper = torch.triu(self.upper, 1) + torch.diag(self.sign_s * torch.exp(self.log_s))
        return lower, upper

    def weight_matrix(self) -> Tensor:
        """The matrix ``W`` ``(C, C)``."""
        if not self.lu:
            return self.weight
        lower, upper = self._lu_factors()
        return self.perm @ (lower @ upper)

    def inverse_matrix(self) -> Tensor:
        """``W^{-1}`` ``(C, C)``: two triangular solves for LU, ``torch.linalg.inv`` otherwise."""
        if not self.lu:
            return torch.linalg.inv(self.weight)
        lower, upper = self._lu_factors()
        # W^-1 = U^-1 L^-1 P^T
        tmp = torch.linalg.solve_triangular(lower, self.perm.t(), upper=False, unitriangular=True)
        return torch.linalg.solve_triangular(upper, tmp, upper=True)

    def log_abs_det(self) -> Tensor:
        """``log|det W|`` (a scalar)."""
        if self.lu:
            return self.log_s.sum()
        return torch.linalg.slogdet(self.weight)[1]

    def logdet(self, x: Tensor) -> Tensor:
        """``N_spatial * log|det W|`` broadcast to ``(B,)``."""
        return (self.log_abs_det() * spatial_numel(x)).expand(x.shape[0])

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_input("InvConv input", x, self.spatial_dims, self.num_channels)
        return conv1x1(x, self.weight_matrix()), self.logdet(x)

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        check_input("InvConv input", z, self.spatial_dims, self.num_channels)
        return conv1x1(z, self.inverse_matrix())
