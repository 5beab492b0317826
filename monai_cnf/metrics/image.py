"""Super-resolution image metrics: PSNR and SSIM on the Y channel (MATLAB ``rgb2ycbcr``) and on RGB.

Conventions (the usual SR benchmark protocol):

- images are float tensors ``(B, C, *spatial)`` with grey levels in [0, 255] (not necessarily integers);
- ``crop_border`` pixels (= the SR scale) are removed from every spatial border before scoring;
- Y channel: ITU-R BT.601 as in MATLAB's ``rgb2ycbcr``:
  :math:`Y = 16 + 65.481 R + 128.553 G + 24.966 B` with R, G, B in [0, 1], i.e. Y in [16, 235] grey levels
  (kept as float, not rounded to uint8);
- data range 255 for both PSNR and SSIM; each image is scored separately and the per-image values are returned
  (average them over a data set);
- PSNR :math:`= 10 \\log_{10}(255^2 / \\mathrm{MSE})` with the MSE over all channels and pixels (MONAI
  :class:`~monai.metrics.PSNRMetric`);
- SSIM: Wang et al. (2004) with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, averaged over the
  *valid* window positions and, for RGB, over channels: the computation of MONAI's
  :class:`~monai.metrics.SSIMMetric` and of MATLAB's ``ssim_index`` / ``skimage.metrics.structural_similarity(
  gaussian_weights=True, use_sample_covariance=False)``, done in float64 here (MONAI casts to float32, which
  costs ~1e-5 of SSIM on real 0..255 images).
"""

from __future__ import annotations

import torch

__all__ = ["psnr_rgb", "psnr_y", "rgb_to_y", "ssim_rgb", "ssim_y"]

_Y_COEFFS = (65.481, 128.553, 24.966)


def _check_pair(pred: torch.Tensor, target: torch.Tensor, crop_border: int) -> tuple[torch.Tensor, torch.Tensor]:
    pred = torch.as_tensor(pred)
    target = torch.as_tensor(target)
    if pred.shape != target.shape:
        raise ValueError(f"`pred` {tuple(pred.shape)} and `target` {tuple(target.shape)} must have the same shape.")
    if pred.ndim not in (4, 5):
        raise ValueError(f"`pred` must be (B, C, H, W) or (B, C, H, W, D), got shape {tuple(pred.shape)}.")
    for name, t in (("pred", pred), ("target", target)):
        if torch.isnan(t).any():
            raise ValueError(f"`{name}` contains NaN.")
        if t.min() < 0 or t.max() > 255:
            raise ValueError(f"`{name}` must hold grey levels in [0, 255]; multiply [0, 1] images by 255 and clamp.")
    if crop_border < 0:
        raise ValueError(f"`crop_border` must be >= 0 (the SR scale), got {crop_border}.")
    if crop_border:
        if any(s <= 2 * crop_border for s in pred.shape[2:]):
            raise ValueError(
                f"`crop_border`={crop_border} leaves no pixel of an image of size {tuple(pred.shape[2:])}."
            )
        sl = (slice(None), slice(None), *[slice(crop_border, -crop_border)] * (pred.ndim - 2))
        pred, target = pred[sl], target[sl]
    return pred.double(), target.double()


def rgb_to_y(image: torch.Tensor) -> torch.Tensor:
    r"""Luma of RGB images as MATLAB ``rgb2ycbcr``: :math:`Y = 16 + (65.481 R + 128.553 G + 24.966 B)/255`.

    Args:
        image: RGB grey levels in [0, 255], shape ``(B, 3, *spatial)``.

    Returns:
        Y in [16, 235] grey levels, shape ``(B, 1, *spatial)`` (float, not rounded).

    Example:
        >>> rgb_to_y(torch.full((1, 3, 1, 1), 255.0)).item()  # white -> 235
        235.0
    """
    image = torch.as_tensor(image)
    if image.ndim < 3 or image.shape[1] != 3:
        raise ValueError(f"`image` must be RGB with shape (B, 3, *spatial), got {tuple(image.shape)}.")
    w = torch.tensor(_Y_COEFFS, dtype=torch.float64, device=image.device) / 255.0
    y = 16.0 + torch.einsum("bc...,c->b...", image.double(), w)
    return y.unsqueeze(1).to(image.dtype if image.is_floating_point() else torch.float64)


def _psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    from monai.metrics import PSNRMetric  # lazy: importing monai costs seconds

    return PSNRMetric(max_val=255.0, reduction="none")(pred, target).reshape(-1)


def _gaussian_window(win_size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    x = torch.arange(win_size, dtype=dtype, device=device) - (win_size - 1) / 2
    w = torch.exp(-(x**2) / (2 * sigma**2))
    return w / w.sum()


def _ssim(pred: torch.Tensor, target: torch.Tensor, win_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    # Same computation as MONAI's ``compute_ssim_and_cs`` (Gaussian window, valid positions, K1 .01, K2 .03), but in
    # float64 with a separable window: MONAI casts to float32, where E[x^2] - E[x]^2 at 0..255 grey levels loses
    # ~1e-5 of SSIM on real images (measured on Set5 "baby": 0.952354 vs skimage's 0.952347).
    if any(s < win_size for s in pred.shape[2:]):
        raise ValueError(
            f"SSIM needs images of at least {win_size} pixels per side after cropping, got {tuple(pred.shape[2:])}."
        )
    spatial_dims = pred.ndim - 2
    channels = pred.shape[1]
    conv = getattr(torch.nn.functional, f"conv{spatial_dims}d")
    w = _gaussian_window(win_size, sigma, torch.float64, pred.device)

    def blur(x: torch.Tensor) -> torch.Tensor:
        for d in range(spatial_dims):
            shape = [1, 1] + [1] * spatial_dims
            shape[2 + d] = win_size
            x = conv(x, w.reshape(shape).expand(channels, *shape[1:]), groups=channels)
        return x

    c1, c2 = (0.01 * 255.0) ** 2, (0.03 * 255.0) ** 2
    mu_x, mu_y = blur(pred), blur(target)
    var_x = blur(pred * pred) - mu_x**2
    var_y = blur(target * target) - mu_y**2
    cov = blur(pred * target) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(1)


def psnr_y(pred: torch.Tensor, target: torch.Tensor, crop_border: int = 0) -> torch.Tensor:
    """PSNR (dB) on the Y channel with ``crop_border`` pixels removed at every border, per image.

    Args:
        pred: predicted RGB image, grey levels in [0, 255], ``(B, 3, *spatial)``.
        target: reference RGB image, same shape.
        crop_border: pixels cropped from each border (the SR scale, e.g. 2). Defaults to 0.

    Returns:
        PSNR per image, shape ``(B,)`` (float64; ``inf`` for identical images).

    Example:
        >>> t = torch.zeros(1, 3, 8, 8); p = t.clone(); p[..., 0, 0] = 255.0  # Y error 219 on 1 of 64 pixels
        >>> round(psnr_y(p, t).item(), 3)  # 10 log10(255^2 / (219^2 / 64))
        19.384
    """
    pred, target = _check_pair(pred, target, 0)
    return psnr_rgb(rgb_to_y(pred), rgb_to_y(target), crop_border)


def psnr_rgb(pred: torch.Tensor, target: torch.Tensor, crop_border: int = 0) -> torch.Tensor:
    """PSNR (dB) over all channels (MSE pooled over channels and pixels), per image, after the border crop.

    Args:
        pred: predicted image in [0, 255], ``(B, C, *spatial)``.
        target: reference image, same shape.
        crop_border: pixels cropped from each border. Defaults to 0.

    Returns:
        PSNR per image ``(B,)``.
    """
    pred, target = _check_pair(pred, target, crop_border)
    return _psnr(pred, target)


def ssim_y(pred: torch.Tensor, target: torch.Tensor, crop_border: int = 0) -> torch.Tensor:
    """SSIM on the Y channel (MATLAB ``rgb2ycbcr``) with ``crop_border`` pixels removed, per image.

    Args:
        pred: predicted RGB image, grey levels in [0, 255], ``(B, 3, *spatial)``.
        target: reference RGB image, same shape.
        crop_border: pixels cropped from each border (the SR scale). Defaults to 0.

    Returns:
        SSIM per image ``(B,)`` in [-1, 1].

    Example:
        >>> x = torch.rand(1, 3, 16, 16) * 255
        >>> round(ssim_y(x, x, crop_border=2).item(), 6)
        1.0
    """
    pred, target = _check_pair(pred, target, 0)
    return ssim_rgb(rgb_to_y(pred), rgb_to_y(target), crop_border)


def ssim_rgb(pred: torch.Tensor, target: torch.Tensor, crop_border: int = 0) -> torch.Tensor:
    """SSIM averaged over channels (each channel scored separately, then the mean), per image.

    Args:
        pred: predicted image in [0, 255], ``(B, C, *spatial)``.
        target: reference image, same shape.
        crop_border: pixels cropped from each border. Defaults to 0.

    Returns:
        SSIM per image ``(B,)``.
    """
    pred, target = _check_pair(pred, target, crop_border)
    return _ssim(pred, target)
