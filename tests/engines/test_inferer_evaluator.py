"""SampleInferer (chunked moments, temperature, sliding windows, metadata) and FlowEvaluator + BitsPerDim."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.handlers import from_engine
from torch.utils.data import DataLoader

from monai_cnf.engines import BitsPerDim, FlowEvaluator, SampleInferer
from monai_cnf.engines.inferer import window_tiles
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
    whole = SampleInferer(num_samples=6, chunk_size=6, return_std=True, return_samples=True)(x, _PerCall())
    net = _PerCall()
    win = SampleInferer(
        num_samples=6, chunk_size=6, return_std=True, return_samples=True, roi_size=(8, 8), overlap=0.5
    )(x, net)
    assert max(c[2][2] for c in net.calls) <= 8 and max(c[2][3] for c in net.calls) <= 8  # windows, not the image
    assert len(net.calls) > 1
    k = torch.arange(6.0)
    assert torch.allclose(whole["pred"], x * k.mean(), rtol=1e-5)
    assert torch.allclose(win["pred"], whole["pred"], rtol=1e-5)
    assert torch.allclose(win["std"], whole["std"], rtol=1e-4)
    # a pixelwise model's stitched samples are its whole-image samples, exactly (nothing blended)
    assert torch.equal(win["samples"], whole["samples"])


@pytest.mark.parametrize("roi", [None, (8, 8)])
def test_progress_reports_the_fraction_of_samples_drawn(roi) -> None:
    """``progress`` sees each chunk (and each window batch) of one image: increasing, ending at 1."""
    seen: list[float] = []
    inferer = SampleInferer(num_samples=10, chunk_size=3, roi_size=roi, overlap=0.5, progress=seen.append)
    inferer(torch.rand(1, 1, 16, 12) + 0.5, _Counter())
    chunks = 4  # 10 samples, 3 per chunk
    windows = 1 if roi is None else len(window_tiles((16, 12), roi, 0.5))
    assert len(seen) == chunks * windows
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0) and seen[0] > 0
    inferer(torch.rand(1, 1, 16, 12), _Counter())  # a second image starts again from 0
    assert seen[len(seen) // 2] < 1.0


def test_window_tiles_partition_the_image_inside_their_windows() -> None:
    for spatial, roi, overlap in [
        ((168, 168), (96, 96), 0.25),
        ((584, 568), (96, 96), 0.5),
        ((10, 7, 9), (4, 4, 9), 0.3),
    ]:
        owner = torch.zeros(spatial, dtype=torch.int64)
        for window, tile in window_tiles(spatial, roi, overlap):
            assert all(w.start <= t.start < t.stop <= w.stop for w, t in zip(window, tile, strict=False))
            assert all(w.stop - w.start == min(r, n) for w, r, n in zip(window, roi, spatial, strict=False))
            owner[tile] += 1
        assert torch.equal(owner, torch.ones_like(owner))  # every pixel in exactly one tile


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_windowed_binary_samples_keep_every_marginal(p: float) -> None:
    """Independent Bernoulli(p) coins per window: every stitched pixel, seams included, must stay Bernoulli(p).

    Blending the windows' samples and rounding (the former stitching) made the 4-way overlap of a 168x168 image
    in 96-pixel windows 1 with probability 0.004 for p = 0.1; here every pixel is checked within binomial error.
    """

    class _Coins(ConditionalLikelihoodModel):
        def sample(self, x, num_samples=1, temperature=1.0, generator=None, chunk_size=None):
            return (torch.rand(num_samples, *x.shape) < p).to(x.dtype)

    n = 400
    torch.manual_seed(0)
    inferer = SampleInferer(num_samples=n, chunk_size=100, return_samples=True, roi_size=(96, 96), overlap=0.25)
    out = inferer(torch.zeros(1, 1, 168, 168), _Coins())
    samples = out["samples"]
    assert samples.shape == (n, 1, 1, 168, 168) and set(samples.unique().tolist()) <= {0.0, 1.0}
    marginal = samples.mean(0)[0, 0]
    sd = math.sqrt(p * (1 - p) / n)
    assert (marginal - p).abs().max() < 6 * sd  # 28,224 pixels: 6 sd leaves ~1e-4 chance of a false alarm
    seams = marginal[60:108, 60:108]  # where the windows overlap (72..95) and around it
    assert abs(seams.mean().item() - p) < 6 * sd / math.sqrt(seams.numel())
    assert torch.allclose(out["pred"], samples.mean(0))  # the mean is the mean of the stitched samples


def test_windowed_samples_are_not_blended() -> None:
    x = torch.rand(2, 1, 16, 12) + 0.5
    out = SampleInferer(num_samples=3, return_samples=True, roi_size=(8, 8), overlap=0.5)(x, _Counter())["samples"]
    # _Counter's k-th call returns k * x: every stitched value is some window's k times x, never an average
    ratio = out / x.unsqueeze(0)
    assert torch.allclose(ratio, ratio.round(), atol=1e-4)


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
    with torch.no_grad():  # a prediction that depends on the image, so "pred" is checked against something
        tiny_flow.w.fill_(2.0), tiny_flow.b.fill_(0.5)
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
    # the prediction of the last batch is the mean of its 4 samples at temperature 0: the model's mean, 2x + 0.5
    output = evaluator.state.output
    pred = torch.stack([o["pred"] for o in output]) if isinstance(output, list) else output["pred"]
    torch.testing.assert_close(pred.as_subclass(torch.Tensor), 2.0 * x[4:] + 0.5, atol=1e-6, rtol=0)


def _brute_max_f(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Max F over every threshold, counted by hand (independent of scikit-learn, which the metric uses)."""
    s, y = scores.double().numpy(), labels.numpy() > 0
    best = 0.0
    for t in np.unique(s):
        predicted = s >= t
        tp = float(np.sum(predicted & y))
        p, r = tp / predicted.sum(), tp / y.sum()
        best = max(best, 2 * p * r / (p + r) if p + r > 0 else 0.0)
    return best


def test_max_f_score_metric_matches_brute_force_inside_mask() -> None:
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
    assert metric.compute() == pytest.approx(_brute_max_f(pred[keep], label[keep]), abs=1e-9)


def test_max_f_score_metric_without_mask_uses_every_pixel() -> None:
    """Items without ``"mask"`` (MONAI Label's datastore) are scored over the whole image."""
    from monai_cnf.engines import MaxFScoreMetric

    g = torch.Generator().manual_seed(1)
    label = (torch.rand(2, 1, 8, 8, generator=g) > 0.7).float()
    pred = (0.5 * label + 0.8 * torch.rand(2, 1, 8, 8, generator=g)).clamp(0, 1)
    metric = MaxFScoreMetric()
    metric.reset()
    metric.update(metric._output_transform([{"pred": p, "label": y} for p, y in zip(pred, label, strict=True)]))
    assert metric.compute() == pytest.approx(_brute_max_f(pred.flatten(), label.flatten()), abs=1e-9)


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


def test_evaluator_bits_per_real_pixel_and_paper_protocol() -> None:
    """``bpd`` counts the real (in-mask) pixels, exactly for a factored model; ``bpd_paper`` pads and counts all."""
    from monai_cnf.networks import FactoredBaseline

    torch.manual_seed(0)
    net = FactoredBaseline(
        2, 3, 1, num_levels=2, beta=0.9, hidden_channels=8, conditioner_kwargs={"feature_channels": 4}
    )
    with torch.no_grad():
        for p in net.out[-1].parameters():
            p.normal_(0.0, 0.5)
    net.eval()
    x = torch.rand(2, 3, 8, 8)
    y = (torch.rand(2, 1, 8, 8) > 0.7).float()
    mask = torch.zeros(2, 1, 8, 8)
    mask[0, :, 1:7, 1:7] = 1  # a "FOV" of 36 pixels
    mask[1, :, :, :5] = 1  # 40 pixels
    data = [{"image": x[i], "label": y[i], "mask": mask[i]} for i in range(2)]
    evaluator = FlowEvaluator(
        "cpu",
        DataLoader(data, batch_size=2),
        net,
        inferer=SampleInferer(num_samples=2, temperature=0.0),
        key_val_metric={"bpd": BitsPerDim()},
        additional_metrics={"bpd_paper": BitsPerDim(from_engine(["bpd_paper"]))},
        paper_spatial_size=(16, 16),
    )
    evaluator.run()
    with torch.no_grad():
        per_pixel = torch.stack(
            [net.log_prob(y, x, mask=m) for m in torch.eye(64).view(64, 1, 1, 8, 8).expand(64, 2, 1, 8, 8)]
        )
        inside = (per_pixel.T.reshape(2, 1, 8, 8) * mask).flatten(1).sum(1)
        expected = (-inside / (torch.tensor([36.0, 40.0]) * math.log(2))).mean().item()
        padded = net.log_prob(torch.nn.functional.pad(y, [4] * 4), torch.nn.functional.pad(x, [4] * 4))
        paper = (-padded / (256 * math.log(2))).mean().item()
    assert evaluator.state.metrics["bpd"] == pytest.approx(expected, rel=1e-5)
    assert evaluator.state.metrics["bpd_paper"] == pytest.approx(paper, rel=1e-5)
    assert evaluator.state.metrics["bpd_paper"] < evaluator.state.metrics["bpd"]  # padding is easy: diluted


class _Upsampler(ConditionalLikelihoodModel):
    """Samples the nearest-upsampled x (scale 2); like a 2-level flow it refuses targets not divisible by 4."""

    scale, divisor = 2, 4

    def sample(self, x, num_samples=1, temperature=1.0, generator=None, chunk_size=None):
        if any((n * self.scale) % self.divisor for n in x.shape[2:]):
            raise ValueError("target not divisible by 4")
        up = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
        return up.unsqueeze(0).expand(num_samples, *up.shape).clone()


def test_pad_to_divisor_pads_the_end_and_crops_the_target_back() -> None:
    x = torch.rand(1, 3, 5, 7)  # target 10 x 14, not divisible by 4
    with pytest.raises(ValueError, match="divisible"):
        SampleInferer(num_samples=1, temperature=0.0)(x, _Upsampler())
    out = SampleInferer(num_samples=2, temperature=1.0, return_samples=True, pad_to_divisor=True)(x, _Upsampler())
    expected = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
    assert out["pred"].shape == (1, 3, 10, 14) and out["samples"].shape == (2, 1, 3, 10, 14)
    torch.testing.assert_close(out["pred"], expected)  # the padding (at the end) never shifts the image
    torch.testing.assert_close(out["samples"][1], expected)


def _logistic_sr(seed: int = 0):
    from monai_cnf.networks import FactoredBaseline

    torch.manual_seed(seed)
    net = FactoredBaseline(
        2, 3, 3, num_levels=2, conditioner="rrdb", likelihood="logistic", hidden_channels=8, scale=2,
        conditioner_kwargs={"num_blocks": 1, "growth_channels": 4, "feature_channels": 8},
    )  # fmt: skip
    with torch.no_grad():
        for p in net.out[-1].parameters():
            p.normal_(0.0, 0.3)
    return net.eval()


def _sr_evaluator(net, x, y, **kwargs) -> FlowEvaluator:
    data = [{"image": x[i], "label": y[i]} for i in range(x.shape[0])]
    extra = {"bpd_crops": BitsPerDim(from_engine(["bpd_crops"]))} if kwargs.get("bpd_crops_per_image") else None
    evaluator = FlowEvaluator(
        "cpu", DataLoader(data, batch_size=1), net, inferer=SampleInferer(1, 0.0, pad_to_divisor=True),
        key_val_metric={"bpd": BitsPerDim()}, additional_metrics=extra, **kwargs,
    )  # fmt: skip
    evaluator.run()
    return evaluator


def test_sr_bits_per_dim_on_the_divisible_region_and_on_random_crops() -> None:
    """Whole images: bits/dim of the largest region divisible by 2**L (exact for the factored model); random
    crops: each image's mean over its crops, reproducible, and a crop of the whole image is the whole image."""
    net = _logistic_sr()
    x = torch.randint(0, 256, (2, 3, 5, 7)).float() / 255  # targets 10 x 14
    y = torch.randint(0, 256, (2, 3, 10, 14)).float()
    with pytest.raises(ValueError, match="divisible"):
        _sr_evaluator(net, x, y)
    evaluator = _sr_evaluator(net, x, y, crop_to_divisor=True)
    with torch.no_grad():
        expected = net.bits_per_dim(y[..., :8, :12], x[..., :4, :6]).mean().item()
    assert evaluator.state.metrics["bpd"] == pytest.approx(expected, rel=1e-6)
    assert evaluator.state.output["pred"].shape[-2:] == (10, 14)  # the prediction covers the whole image

    x8, y8 = x[..., :4, :6], y[..., :8, :12]
    whole = _sr_evaluator(net, x8, y8, bpd_crops_per_image=3, bpd_crop_size=(8, 12))
    assert whole.state.metrics["bpd_crops"] == pytest.approx(whole.state.metrics["bpd"], rel=1e-6)
    calls = []
    original = net.bits_per_dim
    net.bits_per_dim = lambda yy, xx, **kw: calls.append(tuple(yy.shape)) or original(yy, xx, **kw)
    a = _sr_evaluator(net, x8, y8, bpd_crops_per_image=5, bpd_crop_size=(4, 4), bpd_crop_seed=1)
    assert calls.count((5, 3, 4, 4)) == 2  # 5 crops of each of the 2 images, one batch each
    b = _sr_evaluator(net, x8, y8, bpd_crops_per_image=5, bpd_crop_size=(4, 4), bpd_crop_seed=1)
    assert a.state.metrics["bpd_crops"] == b.state.metrics["bpd_crops"]  # a fixed seed: the same crops
    with pytest.raises(ValueError, match="multiple of the scale"):
        _sr_evaluator(net, x8, y8, bpd_crops_per_image=1, bpd_crop_size=(3, 4))


@pytest.mark.parametrize("kind", ["cnf", "factored"])
def test_the_condition_runs_once_for_all_chunks_of_one_call(kind: str) -> None:
    """N samples drawn in chunks run the conditioner once (issue 11): the inferer uses ``sample_chunks``."""
    from monai_cnf.networks import ConditionalNormalizingFlow, FactoredBaseline

    torch.manual_seed(0)
    common = {"spatial_dims": 2, "in_channels": 3, "out_channels": 1, "num_levels": 2, "conditioner": "vgg"}
    if kind == "cnf":
        net = ConditionalNormalizingFlow(**common, num_steps=1, hidden_channels=4, dequantization="binary")
    else:
        net = FactoredBaseline(**common, likelihood="bernoulli")
    net.eval()
    calls = []
    net.conditioner.register_forward_hook(lambda *_: calls.append(1))
    x = torch.rand(1, 3, 8, 8)
    gen = torch.Generator().manual_seed(3)
    # exact_mean=False: the factored model's closed-form moments would be one more (documented) head pass
    out = SampleInferer(num_samples=7, chunk_size=2, return_samples=True, generator=gen, exact_mean=False)(x, net)
    assert len(calls) == 1 and out["samples"].shape == (7, 1, 1, 8, 8)
    if kind == "cnf":  # the same samples as one call of sample(): chunking changes nothing
        again = net.sample(x, num_samples=7, temperature=1.0, generator=torch.Generator().manual_seed(3))
        assert torch.equal(out["samples"], again)
