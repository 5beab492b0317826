"""One contract every flow layer must satisfy, for spatial_dims 2 and 3, conditional and unconditional.

Exact inverse (float64 1e-6, float32 large inputs 1e-4), logdet == slogdet of the autograd Jacobian (float64, 1e-6,
randomised parameters), state_dict round trip, and ValueErrors for a missing or mis-shaped cond.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch.autograd.functional import jacobian

from monai_cnf.networks.flows import (
    ActNorm,
    AffineCoupling,
    FlowLayer,
    FlowSequential,
    FlowStep,
    InvConv,
    Squeeze,
)

COND = 3  # conditioning channels of the conditional cases
HIDDEN = 8


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[int, int], FlowLayer]  # (spatial_dims, cond_channels) -> layer
    channels: int
    conditional: bool
    squeezes: bool = False  # the cond lives at the half resolution (Squeeze first)

    def __str__(self) -> str:
        return f"{self.name}-{'cond' if self.conditional else 'uncond'}"


def _seq(sd: int, cc: int) -> FlowLayer:
    return FlowSequential(
        Squeeze(sd),
        FlowStep(sd, 2 * 2**sd, cc, HIDDEN, "affine"),
        ActNorm(2 * 2**sd, sd),
        FlowStep(sd, 2 * 2**sd, cc, HIDDEN, "additive", lu=False),
    )


CASES = [
    Case("actnorm", lambda sd, cc: ActNorm(2, sd), 2, False),
    Case("invconv_lu", lambda sd, cc: InvConv(3, sd, lu=True), 3, False),
    Case("invconv_plain", lambda sd, cc: InvConv(3, sd, lu=False), 3, False),
    Case("squeeze", lambda sd, cc: Squeeze(sd), 2, False),
    Case("sequential", _seq, 2, False, squeezes=True),
    Case("sequential", _seq, 2, True, squeezes=True),
]
for _cond in (False, True):
    for _kind in ("affine", "additive"):
        for _ch in (2, 3):  # even and odd channel counts
            CASES.append(
                Case(
                    f"coupling_{_kind}_c{_ch}",
                    lambda sd, cc, k=_kind, c=_ch: AffineCoupling(sd, c, cc, HIDDEN, coupling=k),
                    _ch,
                    _cond,
                )
            )
        CASES.append(Case(f"flowstep_{_kind}", lambda sd, cc, k=_kind: FlowStep(sd, 2, cc, HIDDEN, k), 2, _cond))
    CASES.append(Case("flowstep_plain_invconv", lambda sd, cc: FlowStep(sd, 3, cc, HIDDEN, lu=False), 3, _cond))
    # a user subnet factory (FrEIA style) without the default subnet's concat-free path
    CASES.append(
        Case(
            "coupling_custom_subnet",
            lambda sd, cc: AffineCoupling(
                sd,
                3,
                cc,
                subnet=lambda i, o, sd=sd: torch.nn.Sequential(
                    (torch.nn.Conv2d if sd == 2 else torch.nn.Conv3d)(i, 5, 3, padding=1),
                    torch.nn.Tanh(),
                    (torch.nn.Conv2d if sd == 2 else torch.nn.Conv3d)(5, o, 1),
                ),
            ),
            3,
            _cond,
        )
    )
# a single channel can only be coupled on the conditioning features
CASES.append(Case("coupling_affine_c1", lambda sd, cc: AffineCoupling(sd, 1, cc, HIDDEN), 1, True))

PARAMS = [pytest.param(case, sd, id=f"{case}-{sd}d") for case in CASES for sd in (2, 3)]
CONDITIONAL = [p for p in PARAMS if p.values[0].conditional]


def _build(case: Case, sd: int, perturb, dtype=torch.float64, seed: int = 1, std: float = 0.3) -> FlowLayer:
    torch.manual_seed(seed)
    layer = case.make(sd, COND if case.conditional else 0)
    perturb(layer.to(dtype), std=std, seed=seed)
    return layer.eval()


def _inputs(
    case: Case, sd: int, batch: int, size: int, dtype=torch.float64
) -> tuple[torch.Tensor, torch.Tensor | None]:
    x = torch.randn(batch, case.channels, *([size] * sd), dtype=dtype)
    if not case.conditional:
        return x, None
    cond_size = size // 2 if case.squeezes else size
    return x, torch.randn(batch, COND, *([cond_size] * sd), dtype=dtype)


def _tiny_size(sd: int) -> int:
    return 4 if sd == 2 else 2


@pytest.mark.parametrize("case, sd", PARAMS)
def test_exact_inverse_float64(case: Case, sd: int, perturb) -> None:
    layer = _build(case, sd, perturb)
    x, cond = _inputs(case, sd, batch=3, size=4)
    z, logdet = layer(x, cond)
    assert logdet.shape == (3,) and logdet.dtype == torch.float64
    assert not torch.allclose(z.reshape(-1), x.reshape(-1))  # the layer really transforms x
    torch.testing.assert_close(layer.inverse(z, cond), x, atol=1e-6, rtol=0)


@pytest.mark.parametrize("case, sd", PARAMS)
def test_logdet_matches_autograd_jacobian(case: Case, sd: int, perturb) -> None:
    layer = _build(case, sd, perturb)
    x, cond = _inputs(case, sd, batch=2, size=_tiny_size(sd))
    _, logdet = layer(x, cond)
    for b in range(2):
        c_b = None if cond is None else cond[b : b + 1]

        def f(v: torch.Tensor, c_b=c_b) -> torch.Tensor:
            return layer(v.reshape(1, *x.shape[1:]), c_b)[0].reshape(-1)

        jac = jacobian(f, x[b].reshape(-1))
        sign, logabs = torch.linalg.slogdet(jac)
        assert sign != 0
        torch.testing.assert_close(logdet[b], logabs, atol=1e-6, rtol=0)
    if case.name not in ("squeeze",):  # the randomised layer really changes the volume (test could fail)
        assert case.name.startswith(("coupling_additive", "flowstep_additive")) or logdet.abs().max() > 1e-3


@pytest.mark.parametrize("case, sd", PARAMS)
def test_float32_round_trip_large(case: Case, sd: int, perturb) -> None:
    # std 0.1 keeps the 1x1 convs' condition numbers ~3 (as in trained Glows); with std 0.3 (cond ~30, |z| ~ 75)
    # float32 round-off alone reaches ~5e-4, so that regime is covered by the float64 test instead
    layer = _build(case, sd, perturb, dtype=torch.float32, std=0.1)
    x, cond = _inputs(case, sd, batch=2, size=64 if sd == 2 else 16, dtype=torch.float32)
    with torch.no_grad():
        z, _ = layer(x, cond)
        err = (layer.inverse(z, cond) - x).abs().max().item()
    assert err <= 1e-4


@pytest.mark.parametrize("case, sd", PARAMS)
def test_state_dict_round_trip(case: Case, sd: int, perturb) -> None:
    layer = _build(case, sd, perturb)
    fresh = case.make(sd, COND if case.conditional else 0).double()
    fresh.load_state_dict(layer.state_dict())
    layer.train()
    fresh.train()  # training mode: a loaded ActNorm must not re-initialise on its first batch
    x, cond = _inputs(case, sd, batch=2, size=4)
    x = x * 3 + 1  # statistics a re-initialisation would adapt to
    z1, ld1 = layer(x, cond)
    z2, ld2 = fresh(x, cond)
    torch.testing.assert_close(z2, z1, atol=0, rtol=0)
    torch.testing.assert_close(ld2, ld1, atol=0, rtol=0)


@pytest.mark.parametrize("case, sd", CONDITIONAL)
def test_missing_or_misshaped_cond_raises(case: Case, sd: int, perturb) -> None:
    layer = _build(case, sd, perturb)
    assert layer.conditional
    x, cond = _inputs(case, sd, batch=2, size=4)
    z, _ = layer(x, cond)
    for method, arg in ((layer.forward, x), (layer.inverse, z)):
        with pytest.raises(ValueError, match="cond"):
            method(arg, None)
        with pytest.raises(ValueError, match=r"expects cond of shape"):
            method(arg, cond[:, :-1])  # wrong channels
        with pytest.raises(ValueError, match=r"expects cond of shape"):
            method(arg, cond[..., :-1])  # wrong spatial size
        with pytest.raises(ValueError, match=r"expects cond of shape"):
            method(arg, cond[:1])  # wrong batch


@pytest.mark.parametrize("sd", [2, 3])
def test_unconditional_coupling_rejects_cond(sd: int) -> None:
    layer = AffineCoupling(sd, 2, 0, HIDDEN)
    x = torch.randn(1, 2, *([4] * sd))
    with pytest.raises(ValueError, match="unconditional"):
        layer(x, torch.randn(1, 3, *([4] * sd)))
    with pytest.raises(ValueError, match="in_channels >= 2"):
        AffineCoupling(sd, 1, 0, HIDDEN)


@pytest.mark.parametrize("sd", [2, 3])
@pytest.mark.parametrize("conditional", [False, True])
def test_flow_sequential_logdets_add_up(sd: int, conditional: bool, perturb) -> None:
    case = Case("sequential", _seq, 2, conditional, squeezes=True)
    seq = _build(case, sd, perturb)
    x, cond = _inputs(case, sd, batch=2, size=4)
    z, logdet = seq(x, cond)
    h, total, outs = x, torch.zeros(2, dtype=torch.float64), [x]
    for layer in seq.layers:
        h, ld = layer(h, cond if layer.conditional else None)
        total = total + ld
        outs.append(h)
    torch.testing.assert_close(z, h, atol=0, rtol=0)
    torch.testing.assert_close(logdet, total, atol=1e-12, rtol=0)
    assert total.abs().min() > 1e-3  # non-trivial
    # inverse runs the layers in reverse order
    back = z
    for layer, expected in zip(reversed(seq.layers), reversed(outs[:-1]), strict=True):
        back = layer.inverse(back, cond if layer.conditional else None)
        torch.testing.assert_close(back, expected, atol=1e-9, rtol=0)
    torch.testing.assert_close(seq.inverse(z, cond), x, atol=1e-9, rtol=0)


def test_squeeze_layout_and_errors() -> None:
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    z, _ = Squeeze(2)(x)
    # channel k = 2*i + j holds x[2h + i, 2w + j]
    torch.testing.assert_close(z[0, :, 0, 0], torch.tensor([0.0, 1.0, 4.0, 5.0]))
    x3 = torch.arange(64.0).reshape(1, 1, 4, 4, 4)
    z3, _ = Squeeze(3)(x3)
    assert z3.shape == (1, 8, 2, 2, 2)
    torch.testing.assert_close(z3[0, :, 1, 0, 1], x3[0, 0, 2:4, 0:2, 2:4].reshape(-1))
    with pytest.raises(ValueError, match="spatial axis 1 has size 5"):
        Squeeze(2)(torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError, match="spatial axis 0 has size 3"):
        Squeeze(3)(torch.zeros(1, 1, 3, 4, 4))


@pytest.mark.parametrize("sd", [2, 3])
def test_actnorm_data_dependent_init(sd: int) -> None:
    layer = ActNorm(3, sd)
    x = torch.randn(8, 3, *([4] * sd), dtype=torch.float64) * torch.tensor([1.0, 3.0, 0.5]).reshape(1, 3, *[1] * sd)
    x = x + 5.0
    layer.double()
    layer.eval()
    z, _ = layer(x)
    assert not bool(layer.initialized)  # no init in eval mode
    torch.testing.assert_close(z, x)
    layer.train()
    z, logdet = layer(x)
    assert bool(layer.initialized)
    dims = [0, *range(2, sd + 2)]
    torch.testing.assert_close(z.mean(dims), torch.zeros(3, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(z.std(dims, unbiased=False), torch.ones(3, dtype=torch.float64), atol=1e-5, rtol=0)
    expected = -torch.log(x.std(dims, unbiased=False) + layer.eps).sum() * 4**sd
    torch.testing.assert_close(logdet, expected.expand(8), atol=1e-9, rtol=0)
    z2, _ = layer(x * 2)  # second batch: no re-initialisation
    torch.testing.assert_close(z2, 2 * z - layer.bias * layer.log_scale.exp(), atol=1e-9, rtol=0)  # (2x + b) e^s
    fresh = ActNorm(3, sd).double()
    fresh.load_state_dict(layer.state_dict())
    assert bool(fresh.initialized)


def test_invconv_lu_weight_is_orthogonal_at_init_and_inverse_is_exact(perturb) -> None:
    layer = InvConv(6, 2).double()
    w = layer.weight_matrix()
    torch.testing.assert_close(w @ w.T, torch.eye(6, dtype=torch.float64), atol=1e-6, rtol=0)
    # after training-like changes the weight is no longer orthogonal (so w.T is not its inverse) and its logdet
    # is not 0: the LU inverse and logdet must still be exact
    perturb(layer, std=0.3, seed=3)
    w = layer.weight_matrix().detach()
    assert (w @ w.T - torch.eye(6, dtype=torch.float64)).abs().max() > 1e-2
    assert abs(float(torch.linalg.slogdet(w)[1])) > 1e-2
    torch.testing.assert_close(layer.inverse_matrix() @ w, torch.eye(6, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(layer.log_abs_det(), torch.linalg.slogdet(w)[1], atol=1e-12, rtol=0)
