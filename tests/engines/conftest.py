"""Stand-in models for the engine tests (tiny, exact, no dependency on monai_cnf.networks)."""

from __future__ import annotations

import pytest
import torch

TINY_FLOW_SOURCE = '''
import math
import torch

from monai_cnf.networks.base import ConditionalLikelihoodModel


class TinyFlow(ConditionalLikelihoodModel):
    """y | x ~ N(w * x + b + act_bias, exp(log_s)^2) per element; act_bias is data-initialised like ActNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.b = torch.nn.Parameter(torch.zeros(1))
        self.log_s = torch.nn.Parameter(torch.zeros(1))
        self.register_buffer("act_bias", torch.zeros(1))
        self.register_buffer("initialized", torch.tensor(False))
        self.init_calls = 0
        self.init_grad_enabled = None

    def mu(self, x: torch.Tensor) -> torch.Tensor:
        return self.w * x[:, :1] + self.b + self.act_bias

    def log_prob(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.training and not bool(self.initialized):
            with torch.no_grad():
                self.act_bias.fill_(float(y.mean()))
                self.initialized.fill_(True)
            self.init_calls += 1
            self.init_grad_enabled = torch.is_grad_enabled()
        s = self.log_s.exp()
        z = (y - self.mu(x)) / s
        ll = -0.5 * z**2 - self.log_s - 0.5 * math.log(2 * math.pi)
        return ll.flatten(1).sum(1)

    def bits_per_dim(self, y: torch.Tensor, x: torch.Tensor, num_samples: int = 1, mask=None) -> torch.Tensor:
        from monai_cnf.metrics import bits_per_dim, real_dims

        return bits_per_dim(self.log_prob(y, x), real_dims(y, mask))

    def sample(self, x, num_samples=1, temperature=1.0, generator=None, chunk_size=None) -> torch.Tensor:
        mu = self.mu(x)
        return mu.unsqueeze(0) + temperature * self.log_s.exp() * torch.randn(num_samples, *mu.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mu(x)


def make_batches(n_batches: int = 4, batch_size: int = 4, seed: int = 0) -> list:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches * batch_size):
        x = torch.rand(1, 4, 4, generator=g)
        y = 2.0 * x + 0.5 + 0.1 * torch.randn(1, 4, 4, generator=g)
        out.append({"image": x, "label": y})
    return out
'''

_ns: dict = {}
exec(compile(TINY_FLOW_SOURCE, "tiny_flow", "exec"), _ns)
TinyFlow = _ns["TinyFlow"]
make_batches = _ns["make_batches"]


@pytest.fixture
def tiny_flow_source() -> str:
    return TINY_FLOW_SOURCE


@pytest.fixture
def tiny_flow() -> torch.nn.Module:
    return TinyFlow()


@pytest.fixture
def tiny_data() -> list:
    return make_batches()
