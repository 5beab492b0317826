"""The calibration runner: chunked sampling, padding undone exactly, factored soft maps, bits/dim, SR sweep."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.transforms import SpatialPadd

from monai_cnf.calibration.runner import (
    SR_TEMPERATURES,
    calibrate_segmentation,
    calibrate_super_resolution,
    draw_samples,
    has_soft_map,
    segmentation_cases,
)
from monai_cnf.metrics import bits_per_dim, psnr_y, real_dims
from monai_cnf.networks import ConditionalNormalizingFlow
from monai_cnf.networks.base import ConditionalLikelihoodModel


def _tiny_cnf() -> ConditionalNormalizingFlow:
    torch.manual_seed(0)
    net = ConditionalNormalizingFlow(
        spatial_dims=2,
        in_channels=3,
        out_channels=1,
        num_levels=2,
        num_steps=1,
        hidden_channels=8,
        conditioner_kwargs={"feature_channels": (4, 8)},
        dequantizer_kwargs={"num_steps": 1, "hidden_channels": 4},
    )
    for p in net.flow.parameters():  # leave the zero-initialised identity so samples depend on the condition
        torch.nn.init.normal_(p, std=0.1)
    return net.eval()


class _Recorder(ConditionalLikelihoodModel):
    """Samples: the first input channel > noise; records the chunk sizes it was asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []
        self.divisor = 4

    def sample(
        self, x: torch.Tensor, num_samples: int = 1, temperature: float = 1.0, generator=None, chunk_size=None
    ) -> torch.Tensor:
        self.calls.append(num_samples)
        u = torch.rand((num_samples, *x.shape), generator=generator, device=x.device)
        return (x.unsqueeze(0)[:, :, :1] > u[:, :, :1] * temperature).float()

    def log_prob(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -torch.full((x.shape[0],), float(y[0].numel()) * math.log(2.0))  # exactly 1 bit/dim

    def bits_per_dim(self, y: torch.Tensor, x: torch.Tensor, num_samples: int = 1, mask=None) -> torch.Tensor:
        return bits_per_dim(self.log_prob(y, x), y[0].numel())  # 1 bit per element, inside the mask or not


class _Soft(ConditionalLikelihoodModel):
    """A factored Bernoulli model whose soft map is the first input channel."""

    divisor = 4

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1].clamp(0, 1)

    def has_exact_moments(self, temperature: float = 1.0) -> bool:
        return temperature == 1.0

    def exact_moments(self, x: torch.Tensor, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        return self.probabilities(x), self.probabilities(x)

    def sample(
        self, x: torch.Tensor, num_samples: int = 1, temperature: float = 1.0, generator=None, chunk_size=None
    ) -> torch.Tensor:
        raise AssertionError("a factored Bernoulli model is sampled from its soft map, not with sample()")

    def log_prob(self, y: torch.Tensor, x: torch.Tensor, mask=None) -> torch.Tensor:
        p = self.probabilities(x).clamp(1e-6, 1 - 1e-6)
        ll = y * p.log() + (1 - y) * (1 - p).log()
        return (ll if mask is None else ll * (mask > 0.5)).flatten(1).sum(1)

    def bits_per_dim(self, y: torch.Tensor, x: torch.Tensor, num_samples: int = 1, mask=None) -> torch.Tensor:
        return bits_per_dim(self.log_prob(y, x, mask), real_dims(y, mask))


def test_chunked_sampling_equals_unchunked() -> None:
    net = _tiny_cnf()
    x = torch.rand(2, 3, 16, 16)
    one = draw_samples(net, x, 7, 0.8, chunk_size=7, generator=torch.Generator().manual_seed(3), dtype=torch.float32)
    seen: list[int] = []
    chunked = draw_samples(
        net,
        x,
        7,
        0.8,
        chunk_size=3,
        generator=torch.Generator().manual_seed(3),
        dtype=torch.float32,
        on_chunk=seen.append,
    )
    assert seen == [3, 3, 1] and chunked.shape == (7, 2, 1, 16, 16)
    torch.testing.assert_close(chunked.mean(0), one.mean(0), rtol=0, atol=0)
    assert torch.equal(chunked, one)
    assert 0.0 < float(one.mean()) < 1.0 and set(one.unique().tolist()) <= {0.0, 1.0}
    other = draw_samples(net, x, 7, 0.8, chunk_size=3, generator=torch.Generator().manual_seed(4), dtype=torch.float32)
    assert not torch.equal(other, one)  # the generator matters, so the equality above is not vacuous


def test_draw_samples_counts_and_argument_errors() -> None:
    rec = _Recorder()
    s = draw_samples(rec, torch.rand(1, 3, 4, 4), 10, chunk_size=4)
    assert rec.calls == [4, 4, 2] and s.shape == (10, 1, 1, 4, 4) and s.dtype == torch.bool
    with pytest.raises(ValueError, match="chunk_size"):
        draw_samples(rec, torch.rand(1, 3, 4, 4), 2, chunk_size=0)
    with pytest.raises(ValueError, match="num_samples"):
        draw_samples(rec, torch.rand(1, 3, 4, 4), 0)
    with pytest.raises(ValueError, match="sample"):
        draw_samples(torch.nn.Identity(), torch.rand(1, 3, 4, 4), 2)


def _item(h: int, w: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(3, h, w, generator=g)
    label = (image[:1] > 0.7).float()
    mask = torch.ones(1, h, w)
    mask[:, 0] = 0
    return {"image": image, "label": label, "mask": mask, "label2": (image[:1] > 0.65).float()}


def test_padding_is_undone_and_soft_maps_are_exact() -> None:
    items = [_item(13, 10, 0), _item(9, 14, 1)]
    pad = SpatialPadd(["image", "label", "mask"], spatial_size=(20, 20), method="symmetric", allow_missing_keys=True)
    models = {"cnf": _Recorder(), "factored": _Soft()}
    cases = list(segmentation_cases(items, models, num_samples=50, temperature=0.0, pad=pad, seed=1))
    for item, case in zip(items, cases, strict=True):
        first = item["image"][0].numpy()
        # temperature 0: the recorder's samples are exactly (channel 0 > 0), cropped back to the original place
        assert case.samples["cnf"].shape == (50, *first.shape)
        np.testing.assert_array_equal(case.samples["cnf"], np.broadcast_to(first > 0, (50, *first.shape)))
        np.testing.assert_allclose(case.prob_maps["factored"], first, rtol=0, atol=1e-7)  # the exact soft map
        fac = case.samples["factored"]
        assert fac.shape == (50, *first.shape) and fac.dtype == bool
        assert abs(float(fac.mean()) - float(first.mean())) < 0.03  # Bernoulli draws of the soft map
        assert case.bits_per_dim["cnf"] == pytest.approx(1.0)
        # bits per real pixel: inside the FOV mask of the unpadded image, the padding never counts
        p = item["image"][:1].clamp(1e-6, 1 - 1e-6)
        y, fov = item["label"], item["mask"] > 0.5
        expected = -float((y * p.log() + (1 - y) * (1 - p).log())[fov].sum()) / (int(fov.sum()) * math.log(2.0))
        assert case.bits_per_dim["factored"] == pytest.approx(expected, rel=1e-5)
        assert [o.shape for o in case.observers] == [(1, *first.shape)] * 2 and case.mask is not None


def test_calibrate_segmentation_report(tmp_path: Path) -> None:
    items = [_item(12, 12, s) for s in range(2)]
    report = calibrate_segmentation(items, {"cnf": _tiny_cnf(), "factored": _Soft()}, tmp_path, num_samples=4)
    assert {p.name for p in report.plots} >= {"pr_curves.png", "pr_scatter.png", "reliability.png"}
    assert all(p.is_file() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in report.plots)
    for m in ("cnf", "factored"):
        assert 0.0 <= report.metrics[f"{m}/max_f"] <= 1.0 and report.metrics[f"{m}/bits_per_dim"] > 0
    assert has_soft_map(_Soft()) and not has_soft_map(_tiny_cnf())


class _Upsampler(ConditionalLikelihoodModel):
    """SR stand-in: nearest 2x upsampling of the LR image in grey levels, plus temperature-scaled noise."""

    def sample(
        self, x: torch.Tensor, num_samples: int = 1, temperature: float = 1.0, generator=None, chunk_size=None
    ) -> torch.Tensor:
        up = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest") * 255.0
        noise = torch.randn((num_samples, *up.shape), generator=generator) * 20.0 * temperature
        return (up.unsqueeze(0) + noise).round().clamp(0, 255)

    def log_prob(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -torch.full((x.shape[0],), 3.0 * float(y[0].numel()) * math.log(2.0))

    def bits_per_dim(self, y: torch.Tensor, x: torch.Tensor, num_samples: int = 1, mask=None) -> torch.Tensor:
        return bits_per_dim(self.log_prob(y, x), real_dims(y, mask))


def test_super_resolution_sweep(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    items = []
    for _ in range(2):
        lr = torch.rand(3, 8, 8, generator=g)
        hr = (torch.nn.functional.interpolate(lr[None], scale_factor=2, mode="bilinear")[0] * 255).round()
        items.append({"image": lr, "label": hr})
    report = calibrate_super_resolution(items, {"cnf": _Upsampler()}, tmp_path)
    for tau in SR_TEMPERATURES:
        assert math.isfinite(report.metrics[f"cnf/psnr_y_t{tau:g}"])
    expected = np.mean(
        [
            float(
                psnr_y(
                    (torch.nn.functional.interpolate(it["image"][None], scale_factor=2) * 255).round(),
                    it["label"][None],
                    crop_border=2,
                )
            )
            for it in items
        ]
    )
    assert report.metrics["cnf/psnr_y_t0"] == pytest.approx(expected, rel=1e-6)  # tau = 0: no noise
    assert report.metrics["cnf/psnr_y_t1"] < report.metrics["cnf/psnr_y_t0"]  # noise costs PSNR
    assert report.metrics["cnf/bits_per_dim"] == pytest.approx(3.0)
    assert len(report.plots) == 2 and all(p.is_file() for p in report.plots)


def test_sliding_windows_keep_pointwise_models_exact_and_samples_binary() -> None:
    """roi_size (the DRIVE CPU preset samples in windows): for models that act pixel by pixel, windows change
    nothing; samples stay binary; windows smaller than the image are really used."""
    items = [_item(24, 20, 0)]
    pad = SpatialPadd(["image", "label", "mask"], spatial_size=(24, 24), allow_missing_keys=True)
    models = {"cnf": _Recorder(), "factored": _Soft()}
    whole = next(segmentation_cases(items, models, num_samples=6, temperature=0.0, pad=pad))
    windowed = next(segmentation_cases(items, models, num_samples=6, temperature=0.0, pad=pad, roi_size=(8, 8)))
    np.testing.assert_array_equal(windowed.samples["cnf"], whole.samples["cnf"])
    np.testing.assert_allclose(windowed.prob_maps["factored"], whole.prob_maps["factored"], rtol=0, atol=1e-6)

    class _Sizes(_Recorder):
        def sample(self, x, num_samples=1, temperature=1.0, generator=None, chunk_size=None):
            self.sizes = [*getattr(self, "sizes", []), tuple(x.shape[2:])]
            return super().sample(x, num_samples, temperature, generator)

    net = _Sizes()
    s = draw_samples(net, torch.rand(1, 3, 24, 20), 5, 1.0, chunk_size=2, dtype=torch.float32, roi_size=(8, 8))
    assert s.shape == (5, 1, 1, 24, 20) and set(s.unique().tolist()) <= {0.0, 1.0}
    assert set(net.sizes) == {(8, 8)} and net.calls.count(2) > 2  # window by window, chunk by chunk


def test_roi_size_per_model() -> None:
    class _SoftSizes(_Soft):
        def probabilities(self, x):
            self.sizes = [*getattr(self, "sizes", []), tuple(x.shape[2:])]
            return super().probabilities(x)

    class _Sizes(_Recorder):
        def sample(self, x, num_samples=1, temperature=1.0, generator=None, chunk_size=None):
            self.sizes = [*getattr(self, "sizes", []), tuple(x.shape[2:])]
            return super().sample(x, num_samples, temperature, generator)

    models = {"cnf": _Sizes(), "factored": _SoftSizes()}
    next(segmentation_cases([_item(16, 16, 0)], models, num_samples=2, roi_size={"cnf": (8, 8), "factored": None}))
    assert set(models["cnf"].sizes) == {(8, 8)} and set(models["factored"].sizes) == {(16, 16)}


def test_input_transforms_per_model_see_the_whole_image_before_padding() -> None:
    """A model trained on preprocessed images (equalize_contrast) gets its transform of the whole loaded image, then
    the same padding; the other model and the case's image stay as loaded."""
    seen: list[tuple[int, ...]] = []

    def centre(img: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(img.shape))
        return img - 0.5

    item = _item(13, 10, 0)
    pad = SpatialPadd(["image", "label", "mask"], spatial_size=(20, 20), method="symmetric", allow_missing_keys=True)
    models = {"cnf": _Recorder(), "factored": _Soft()}
    case = next(
        segmentation_cases([item], models, num_samples=4, temperature=0.0, pad=pad, input_transforms={"cnf": centre})
    )
    first = item["image"][0].numpy()
    assert seen == [(3, 13, 10)]  # the unpadded image
    np.testing.assert_array_equal(case.samples["cnf"], np.broadcast_to(first > 0.5, (4, *first.shape)))
    np.testing.assert_allclose(case.prob_maps["factored"], first, rtol=0, atol=1e-7)
    torch.testing.assert_close(case.image, item["image"].float())
