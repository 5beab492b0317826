"""Mixed precision on CPU (bfloat16 autocast): the conditioner runs in bf16, the flow and its densities in fp32, and
bits/dim agree with float32 to a relative 1e-3 (measured: 7e-5 for the DRIVE model, 2.5e-5 for the SR model)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader

from monai_cnf.engines import FlowTrainer, amp_settings
from monai_cnf.networks import ConditionalNormalizingFlow

RTOL = 1e-3

CASES = {
    "drive": (
        {"out_channels": 1, "conditioner": "vgg", "coupling": "additive", "dequantization": "binary", "scale": 1,
         "conditioner_kwargs": {"feature_channels": (8, 16)},
         "dequantizer_kwargs": {"num_steps": 1, "hidden_channels": 8}},
        lambda g: (torch.rand(2, 3, 32, 32, generator=g), (torch.rand(2, 1, 32, 32, generator=g) > 0.7).float()),
    ),
    "sr": (
        {"out_channels": 3, "conditioner": "rrdb", "coupling": "affine", "dequantization": "uniform", "scale": 2,
         "conditioner_kwargs": {"num_blocks": 1, "growth_channels": 8, "feature_channels": 16}},
        lambda g: (torch.rand(2, 3, 16, 16, generator=g), torch.randint(0, 256, (2, 3, 32, 32), generator=g).float()),
    ),
}  # fmt: skip


def _trained(kind: str) -> tuple[ConditionalNormalizingFlow, torch.Tensor, torch.Tensor]:
    """A model a few Adam steps away from its identity-like init (so nothing hides behind zero-initialised layers)."""
    kwargs, data = CASES[kind]
    torch.manual_seed(0)
    model = ConditionalNormalizingFlow(
        spatial_dims=2, in_channels=3, num_levels=2, num_steps=2, hidden_channels=16, **kwargs
    )
    x, y = data(torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(5):
        opt.zero_grad()
        (-model.log_prob(y, x).mean()).backward()
        opt.step()
    return model.eval(), x, y


@pytest.mark.parametrize("kind", sorted(CASES))
def test_autocast_bits_per_dim_matches_float32(kind: str) -> None:
    model, x, y = _trained(kind)
    dtypes = []
    hook = model.conditioner.register_forward_hook(lambda m, i, out: dtypes.append(out[0].dtype))
    with torch.no_grad():
        full = model.log_prob(y, x, generator=torch.Generator().manual_seed(1))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model.log_prob(y, x, generator=torch.Generator().manual_seed(1))
    hook.remove()
    assert dtypes == [torch.float32, torch.bfloat16]  # the autocast path really ran the conditioner in bf16
    assert mixed.dtype == torch.float32  # log-densities and log-dets in float32
    dims = y[0].numel() * math.log(2.0)
    torch.testing.assert_close(-mixed / dims, -full / dims, rtol=RTOL, atol=0)
    assert not torch.equal(mixed, full)  # not the same computation: bf16 made a (small) difference


def test_trainer_amp_step_on_cpu_matches_float32() -> None:
    model, x, y = _trained("drive")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    losses, dtypes = {}, []
    hook = model.conditioner.register_forward_hook(lambda m, i, out: dtypes.append(out[0].dtype))
    for amp in (False, True):
        model.load_state_dict(state)
        loader = DataLoader([{"image": xi, "label": yi} for xi, yi in zip(x, y, strict=True)], batch_size=2)
        trainer = FlowTrainer(
            "cpu", 1, loader, model, torch.optim.SGD(model.parameters(), lr=0.0), amp=amp, decollate=False
        )
        assert trainer.amp_settings["enabled"] is amp and trainer.grad_scaler is None
        torch.manual_seed(3)  # the same dequantization noise in both runs
        trainer.run()
        losses[amp] = float(trainer.state.output["loss"])
    hook.remove()
    assert dtypes == [torch.float32, torch.bfloat16]  # the trainer's step really ran under bf16 autocast
    assert losses[True] == pytest.approx(losses[False], rel=RTOL)
    assert losses[True] != losses[False]


def test_amp_settings_choose_dtype_and_scaler() -> None:
    assert amp_settings("cpu", True)["dtype"] == torch.bfloat16
    assert amp_settings("cpu", True, "bfloat16")["scaler"] is False
    with pytest.raises(ValueError, match="float16 autocast needs CUDA"):
        amp_settings("cpu", True, "float16")
    with pytest.raises(ValueError, match="bfloat16' or 'float16"):
        amp_settings("cpu", True, "float64")
