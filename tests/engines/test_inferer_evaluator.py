"""SampleInferer (chunked moments, temperature, sliding windows, metadata) and FlowEvaluator + BitsPerDim."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from torch.utils.data import DataLoader

from monai_cnf.engines import BitsPerDim, FlowEvaluator, SampleInferer
from monai_cnf.networks.base import ConditionalLikelihoodModel


class _Counter(ConditionalLikelihoodModel):
    """Sample k (k = 0, 1, ...) is x * k exactly: mean and std are known in closed form."""

    def __init__(self) -> None:
        super().__init__()
        self.k = 0
        self.calls: list[tuple[int, float, tuple]] = []

    def sample(self, x, num_samples=1, temperature=1.0, generator=None, chunk_size=None) -> torch.Tensor:
        self.calls.append((num_samples, temperature, tuple(x.shape)))
        ks = torch.arange(self.k, self.k + num_samples, dtype=x.dtype)
        self.k += num_samples
        return ks.view(-1, *([1] * x.dim())) * x.unsqueeze(0)


@pytest.mark.parametrize("chunk", [1, 3, 10])
def test_mean_std_samples_with_chunks(chunk: int) -> None:
    x = torch.rand(2, 1, 4, 4) + 0.5
    net = _Counter()
    out = SampleInferer(num_samples=10, temperature=0.7, chunk_size=chunk, return_std=True, return_samples=True)(x, net)
    k = torch.arange(10.0)
    assert torch.allclose(out["pred"], x * k.mean(), rtol=1e-6)
    assert torch.allclose(out["std"], x * k.std(unbiased=False), rtol=1e-5)
    assert out["samples"].shape == (10, 2, 1, 4, 4)
    assert torch.allclose(out["samples"][7], 7 * x)
    assert max(c[0] for c in net.calls) == chunk and sum(c[0] for c in net.calls) == 10
    assert all(c[1] == 0.7 for c in net.calls)


def test_temperature_zero_draws_once() -> None:
    net = _Counter()
    x = torch.ones(1, 1, 4, 4)
    mean = SampleInferer(num_samples=50, temperature=0.0)(x, net)
    assert [c[0] for c in net.calls] == [1] and mean.shape == x.shape


def test_sliding_window_matches_whole_image_and_bounds_windows() -> None:
    class _PerCall(_Counter):  # every call restarts at k = 0: each window sees the same 6 samples as the whole
        def sample(self, x, num_samples=1, temperature=1.0, generator=None, chunk_size=None):
            self.k = 0
            return super().sample(x, num_samples, temperature)

    x = torch.rand(1, 1, 16, 12) + 0.5
    whole = SampleInferer(num_samples=6, chunk_size=6, return_std=True)(x, _PerCall())
    net = _PerCall()
    win = SampleInferer(num_samples=6, chunk_size=6, return_std=True, roi_size=(8, 8), overlap=0.5, mode="gaussian")(
        x, net
    )
    assert max(c[2][2] for c in net.calls) <= 8 and max(c[2][3] for c in net.calls) <= 8  # windows, not the image
    assert len(net.calls) > 1
    k = torch.arange(6.0)
    assert torch.allclose(whole["pred"], x * k.mean(), rtol=1e-5)
    assert torch.allclose(win["pred"], whole["pred"], rtol=1e-4)
    assert torch.allclose(win["std"], whole["std"], rtol=1e-4)


def test_sliding_window_binary_samples_stay_binary() -> None:
    class _Coin(ConditionalLikelihoodModel):  # independent fair coins: windows disagree in their overlaps
        def sample(self, x, num_samples=1, temperature=1.0, generator=None, chunk_size=None):
            return (torch.rand(num_samples, *x.shape) < 0.5).to(x.dtype)

    class _Ones(ConditionalLikelihoodModel):  # every window agrees: the stitched samples are exactly the windows' ones
        def sample(self, x, num_samples=1, temperature=1.0, generator=None, chunk_size=None):
            return torch.ones(num_samples, *x.shape, dtype=x.dtype)

    x = torch.zeros(2, 1, 16, 12)
    inferer = SampleInferer(num_samples=5, chunk_size=2, return_samples=True, roi_size=(8, 8), overlap=0.5)
    torch.manual_seed(0)
    samples = inferer(x, _Coin())["samples"]
    assert samples.shape == (5, 2, 1, 16, 12) and set(samples.unique().tolist()) == {0.0, 1.0}
    assert 0.3 < samples.mean().item() < 0.7
    assert torch.equal(inferer(x, _Ones())["samples"], torch.ones(5, 2, 1, 16, 12))
    out = inferer(x + 0.5, _Counter())["samples"]  # non-integer samples are blended, not rounded
    assert not torch.equal(out, out.round())


def test_metatensor_in_metatensor_out() -> None:
    x = MetaTensor(torch.ones(1, 1, 4, 4), meta={"filename_or_obj": "a.png"})
    mean = SampleInferer(num_samples=2)(x, _Counter())
    assert isinstance(mean, MetaTensor) and mean.meta["filename_or_obj"] == "a.png"


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="num_samples"):
        SampleInferer(num_samples=0)
    with pytest.raises(ValueError, match="temperature"):
        SampleInferer(temperature=-1)
    with pytest.raises(ValueError, match="sample"):
        SampleInferer()(torch.ones(1, 1, 4, 4), torch.nn.Identity())


def test_evaluator_bits_per_dim_and_mean(tiny_flow, tiny_data) -> None:
    tiny_flow.initialized.fill_(True)
    loader = DataLoader(tiny_data[:8], batch_size=4)
    evaluator = FlowEvaluator(
        "cpu",
        loader,
        tiny_flow,
        inferer=SampleInferer(num_samples=4, temperature=0.0),
        key_val_metric={"val_bpd": BitsPerDim()},
    )
    evaluator.run()
    x = torch.stack([d["image"] for d in tiny_data[:8]])
    y = torch.stack([d["label"] for d in tiny_data[:8]])
    expected = (-tiny_flow.log_prob(y, x) / (16 * math.log(2.0))).mean().item()
    assert evaluator.state.metrics["val_bpd"] == pytest.approx(expected, rel=1e-5)


def test_max_f_score_metric_matches_sklearn_inside_mask() -> None:
    from sklearn.metrics import precision_recall_curve

    from monai_cnf.engines import MaxFScoreMetric

    g = torch.Generator().manual_seed(0)
    label = (torch.rand(3, 1, 8, 8, generator=g) > 0.7).float()
    pred = (0.6 * label + 0.7 * torch.rand(3, 1, 8, 8, generator=g)).clamp(0, 1)
    mask = torch.zeros(3, 1, 8, 8)
    mask[..., 1:7, 1:7] = 1
    pred[..., 0, :] = 1.0  # confident false positives outside the FOV must not count
    label[..., 0, :] = 0.0
    metric = MaxFScoreMetric()
    metric.reset()
    items = [{"pred": p, "label": y, "mask": m} for p, y, m in zip(pred, label, mask, strict=True)]
    metric.update(metric._output_transform(items))  # what an engine does with its decollated output
    keep = mask.bool()
    prec, rec, _ = precision_recall_curve(label[keep].numpy(), pred[keep].numpy())
    f = (2 * prec * rec / np.maximum(prec + rec, 1e-12)).max()
    assert metric.compute() == pytest.approx(float(f), abs=1e-9)


def test_max_f_score_metric_without_mask_uses_every_pixel() -> None:
    """Items without ``"mask"`` (MONAI Label's datastore) are scored over the whole image."""
    from sklearn.metrics import precision_recall_curve

    from monai_cnf.engines import MaxFScoreMetric

    g = torch.Generator().manual_seed(1)
    label = (torch.rand(2, 1, 8, 8, generator=g) > 0.7).float()
    pred = (0.5 * label + 0.8 * torch.rand(2, 1, 8, 8, generator=g)).clamp(0, 1)
    metric = MaxFScoreMetric()
    metric.reset()
    metric.update(metric._output_transform([{"pred": p, "label": y} for p, y in zip(pred, label, strict=True)]))
    prec, rec, _ = precision_recall_curve(label.flatten().numpy(), pred.flatten().numpy())
    f = (2 * prec * rec / np.maximum(prec + rec, 1e-12)).max()
    assert metric.compute() == pytest.approx(float(f), abs=1e-9)


def test_rich_progress_shows_loss() -> None:
    import io

    from rich.console import Console

    from monai_cnf.engines import FlowTrainer, RichProgressHandler

    buf = io.StringIO()
    net = _TinyStandIn()
    data = [{"image": torch.rand(1, 4, 4), "label": torch.rand(1, 4, 4)} for _ in range(4)]
    trainer = FlowTrainer("cpu", 2, DataLoader(data, batch_size=2), net, torch.optim.SGD(net.parameters(), lr=0.0))
    RichProgressHandler("fit", console=Console(file=buf, force_terminal=False, width=120)).attach(trainer)
    trainer.run()
    text = buf.getvalue()
    assert "fit 2/2" in text and "2/2" in text and "loss=" in text and "bpd=" in text


class _TinyStandIn(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.b = torch.nn.Parameter(torch.zeros(1))

    def log_prob(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -((y - self.b) ** 2).flatten(1).sum(1)
