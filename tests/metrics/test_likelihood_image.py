"""bits/dim and SR image metrics against hand values and independent implementations (numpy, scikit-image)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.color import rgb2ycbcr
from skimage.metrics import structural_similarity

from monai_cnf.metrics import bits_per_dim, psnr_rgb, psnr_y, rgb_to_y, ssim_rgb, ssim_y


def test_bits_per_dim() -> None:
    lp = torch.tensor([-8 * math.log(2.0), -3 * math.log(2.0)])
    torch.testing.assert_close(bits_per_dim(lp, 4), torch.tensor([2.0, 0.75]))
    torch.testing.assert_close(bits_per_dim(lp, torch.tensor([8, 3])), torch.tensor([1.0, 1.0]))
    with pytest.raises(ValueError, match="num_dims"):
        bits_per_dim(lp, 0)
    with pytest.raises(ValueError, match="num_dims"):
        bits_per_dim(lp, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="log_prob"):
        bits_per_dim(lp[None], 4)
    with pytest.raises(ValueError, match="log_prob"):
        bits_per_dim(torch.tensor([float("nan")]), 4)


def test_rgb_to_y_matlab_coefficients() -> None:
    rgb = torch.tensor([[0.0, 0.0, 0.0], [255.0, 255.0, 255.0], [255.0, 0.0, 0.0], [0.0, 0.0, 255.0]])
    y = rgb_to_y(rgb.T[None, :, :, None])[0, 0, :, 0]
    torch.testing.assert_close(y, torch.tensor([16.0, 235.0, 16.0 + 65.481, 16.0 + 24.966]))
    g = np.random.default_rng(0)
    img = g.integers(0, 256, (6, 7, 3)).astype(np.float64)
    ref = rgb2ycbcr(img / 255.0)[..., 0]  # scikit-image: same BT.601 / MATLAB definition
    got = rgb_to_y(torch.from_numpy(img).permute(2, 0, 1)[None])[0, 0].numpy()
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)


def _pair(seed: int = 0, size: tuple[int, int] = (28, 31)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, 256, (2, 3, *size), generator=g).double()
    pred = (target + 25 * torch.randn(target.shape, generator=g, dtype=torch.float64)).clamp(0, 255).round()
    return pred, target


def test_psnr_against_numpy() -> None:
    pred, target = _pair()
    for b in range(2):
        p, t = pred[b].numpy(), target[b].numpy()
        mse = np.mean((p - t) ** 2)
        assert psnr_rgb(pred, target)[b].item() == pytest.approx(10 * np.log10(255**2 / mse), rel=1e-9)
        w = np.array([65.481, 128.553, 24.966]) / 255
        yp, yt = 16 + np.tensordot(w, p, 1), 16 + np.tensordot(w, t, 1)
        c = 2
        mse_y = np.mean((yp[c:-c, c:-c] - yt[c:-c, c:-c]) ** 2)
        assert psnr_y(pred, target, crop_border=2)[b].item() == pytest.approx(10 * np.log10(255**2 / mse_y), rel=1e-9)


def test_ssim_against_skimage_gaussian() -> None:
    pred, target = _pair(1)
    crop = 2
    got_y = ssim_y(pred, target, crop_border=crop)
    got_rgb = ssim_rgb(pred, target, crop_border=crop)
    kw = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False, "data_range": 255.0}
    for b in range(2):
        p = pred[b].permute(1, 2, 0).numpy()[crop:-crop, crop:-crop]
        t = target[b].permute(1, 2, 0).numpy()[crop:-crop, crop:-crop]
        ref_y = structural_similarity(rgb2ycbcr(p / 255)[..., 0], rgb2ycbcr(t / 255)[..., 0], **kw)
        ref_rgb = structural_similarity(p, t, channel_axis=2, **kw)
        assert got_y[b].item() == pytest.approx(ref_y, abs=1e-10)
        assert got_rgb[b].item() == pytest.approx(ref_rgb, abs=1e-10)
    assert 0 < got_y.min() < 1


def test_identical_images() -> None:
    _, target = _pair()
    assert torch.isinf(psnr_y(target, target)).all()
    torch.testing.assert_close(ssim_y(target, target), torch.ones(2, dtype=torch.float64), atol=1e-6, rtol=0)


def test_image_metrics_bad_input() -> None:
    pred, target = _pair()
    with pytest.raises(ValueError, match="pred"):
        psnr_y(pred[:, :, :-1], target)
    with pytest.raises(ValueError, match="target"):
        psnr_rgb(pred, target / 255 - 1)
    with pytest.raises(ValueError, match="image"):
        rgb_to_y(pred[:, :2])
    with pytest.raises(ValueError, match="crop_border"):
        ssim_y(pred, target, crop_border=20)
    nan = pred.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="pred"):
        ssim_rgb(nan, target)


def test_ssim_agrees_with_monai_ssim_metric() -> None:
    from monai.metrics import SSIMMetric

    pred, target = _pair(2)
    monai_val = SSIMMetric(spatial_dims=2, data_range=255.0, reduction="none")(pred, target).reshape(-1)
    torch.testing.assert_close(ssim_rgb(pred, target), monai_val.double(), atol=1e-5, rtol=0)
