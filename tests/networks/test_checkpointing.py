"""Conditioner checkpointing (issue 11, item 6): same training, fewer saved activations, BatchNorm counted once."""

from __future__ import annotations

import copy

import pytest
import torch

from monai_cnf.networks import ConditionalNormalizingFlow, FactoredBaseline


def _models(kind: str, features: tuple[int, int] = (8, 16)) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    common = {"spatial_dims": 2, "in_channels": 3, "out_channels": 1, "num_levels": 2, "conditioner": "vgg"}
    common["conditioner_kwargs"] = {"feature_channels": features, "norm": "batch"}
    if kind == "cnf":
        plain = ConditionalNormalizingFlow(**common, num_steps=1, hidden_channels=8, dequantization="binary")
    else:
        plain = FactoredBaseline(**common, hidden_channels=8)
    ckpt = copy.deepcopy(plain)
    ckpt.use_checkpoint = True
    return plain.train(), ckpt.train()


def _saved_bytes(model: torch.nn.Module, fn) -> int:
    """Bytes of the distinct storages autograd saves for backward in ``fn``, parameters excluded."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in params:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = fn()
    loss.backward()
    return sum(seen.values())


@pytest.mark.parametrize("kind", ["cnf", "factored"])
def test_checkpointed_conditioner_trains_exactly_as_the_plain_one(kind: str) -> None:
    plain, ckpt = _models(kind)
    x = torch.rand(2, 3, 16, 16)
    y = (torch.rand(2, 1, 16, 16) > 0.7).float()
    losses = []
    for model in (plain, ckpt):
        torch.manual_seed(1)  # the same dequantization noise
        loss = model.bits_per_dim(y, x).mean()
        loss.backward()
        losses.append(loss.detach())
    assert torch.allclose(losses[0], losses[1], atol=1e-6)
    for (name, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-5, rtol=1e-4), name
    # BatchNorm saw one batch in both: the recompute in backward did not update its running statistics again
    for (name, a), (_, b) in zip(plain.named_buffers(), ckpt.named_buffers(), strict=True):
        assert torch.equal(a, b), name


def test_checkpointing_keeps_fewer_activations_for_backward() -> None:
    plain, ckpt = _models("cnf", features=(32, 64))  # a toy whose conditioner holds most of the activations
    x = torch.rand(2, 3, 32, 32)
    y = (torch.rand(2, 1, 32, 32) > 0.7).float()
    saved = {}
    for name, model in (("plain", plain), ("checkpointed", ckpt)):
        torch.manual_seed(1)
        saved[name] = _saved_bytes(model, lambda m=model: m.bits_per_dim(y, x).mean())
    assert saved["checkpointed"] < 0.7 * saved["plain"], saved  # measured: 0.63


def test_checkpointing_only_where_backward_follows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training with gradients checkpoints the conditioner; evaluation and no-grad sampling run it plainly."""
    calls = []
    real = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    _, ckpt = _models("cnf")
    x = torch.rand(1, 3, 16, 16)
    y = (torch.rand(1, 1, 16, 16) > 0.7).float()
    ckpt.bits_per_dim(y, x).mean().backward()
    assert len(calls) == 1
    ckpt.eval()
    with torch.no_grad():
        assert ckpt.sample(x, num_samples=2).shape == (2, 1, 1, 16, 16)
    ckpt.bits_per_dim(y, x)
    assert len(calls) == 1
