"""MATLAB bicubic downscaling: weights and outputs against values derived by hand from the kernel definition.

Keys' cubic with a = -0.5: cubic(t) = 1.5|t|^3 - 2.5|t|^2 + 1 (|t| <= 1),
-0.5|t|^3 + 2.5|t|^2 - 4|t| + 2 (1 < |t| <= 2).
For a 2x downscaling with antialiasing, h(d) = 0.5 * cubic(d / 2), and output pixel i sits at input coordinate
x_i = 2 i + 0.5, so the 8 taps j = 2i-3 .. 2i+4 are at distances d = +-0.5, +-1.5, +-2.5, +-3.5:
    cubic(0.25) = 1.5/64 - 2.5/16 + 1                 = 0.8671875
    cubic(0.75) = 1.5*27/64 - 2.5*9/16 + 1            = 0.2265625
    cubic(1.25) = -0.5*125/64 + 2.5*25/16 - 5 + 2     = -0.0703125
    cubic(1.75) = -0.5*343/64 + 2.5*49/16 - 7 + 2     = -0.0234375
The 8 weights sum to 0.5 * 2 * (0.8671875 + 0.2265625 - 0.0703125 - 0.0234375) = 1 (no renormalisation needed).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image

from monai_cnf.transforms import BicubicDownsample, BicubicDownsampled, bicubic_resize, cubic_kernel, imresize_weights

HAND = 0.5 * np.array([-0.0234375, -0.0703125, 0.2265625, 0.8671875, 0.8671875, 0.2265625, -0.0703125, -0.0234375])


def test_kernel_values():
    t = np.array([0.0, 0.25, 0.75, 1.0, 1.25, 1.75, 2.0, 2.5])
    np.testing.assert_allclose(cubic_kernel(t), [1, 0.8671875, 0.2265625, 0, -0.0703125, -0.0234375, 0, 0], atol=1e-15)


def test_weights_interior_2x_match_hand_values():
    idx, w = imresize_weights(32, 16, 0.5)
    for i in range(2, 14):  # away from the borders: taps 2i-3 .. 2i+4
        np.testing.assert_array_equal(idx[i], np.arange(2 * i - 3, 2 * i + 5))
        np.testing.assert_allclose(w[i], HAND, atol=1e-15)


def test_weights_without_antialias_are_plain_cubic():
    # no widening: 4 taps at distances +-0.5, +-1.5 -> cubic(0.5) = 0.5625, cubic(1.5) = -0.0625
    idx, w = imresize_weights(32, 16, 0.5, antialias=False)
    np.testing.assert_allclose(w[5], [-0.0625, 0.5625, 0.5625, -0.0625], atol=1e-15)
    np.testing.assert_array_equal(idx[5], [9, 10, 11, 12])


def test_impulse_response_is_the_widened_kernel():
    x = torch.zeros(1, 1, 40, dtype=torch.float64)
    x[0, 0, 20] = 1.0
    out = bicubic_resize(x, 0.5, spatial_axes=[-1])[0, 0].numpy()
    expected = np.zeros(20)
    for i in range(20):
        d = 2 * i + 0.5 - 20
        if abs(d) < 4:
            expected[i] = HAND[20 - (2 * i - 3)]
    np.testing.assert_allclose(out, expected, atol=1e-14)
    # output 10 sits at 20.5 (distance 0.5): 0.8671875 / 2; output 9 at 18.5 (distance 1.5): 0.2265625 / 2
    assert out[10] == pytest.approx(0.43359375, abs=1e-15) and out[9] == pytest.approx(0.11328125, abs=1e-15)


def test_ramp_interior_and_mirrored_border():
    n = 24
    ramp = torch.arange(n, dtype=torch.float64)[None]
    out = bicubic_resize(ramp, 0.5)[0].numpy()
    # symmetric weights summing to one reproduce a linear function: out[i] = x_i = 2 i + 0.5
    np.testing.assert_allclose(out[2:-2], 2 * np.arange(2, n // 2 - 2) + 0.5, atol=1e-12)
    # border: taps -3 .. 4 mirror (edge repeated) to pixels 2, 1, 0, 0, 1, 2, 3, 4
    assert out[0] == pytest.approx(float(HAND @ np.array([2, 1, 0, 0, 1, 2, 3, 4])), abs=1e-12)
    # = 0.5 * (-0.046875 - 0.0703125 + 0 + 0 + 0.8671875 + 0.453125 - 0.2109375 - 0.09375) = 0.5 * 0.8984375
    assert out[0] == pytest.approx(0.44921875, abs=1e-12)


def test_constant_stays_constant_everywhere_and_sizes():
    x = torch.full((3, 17, 10), 7.0)
    out = bicubic_resize(x, 0.5)
    assert tuple(out.shape) == (3, 9, 5)  # ceil(17 / 2), ceil(10 / 2)
    torch.testing.assert_close(out, torch.full((3, 9, 5), 7.0))
    assert tuple(BicubicDownsample(scale=3)(torch.ones(1, 12, 9)).shape) == (1, 4, 3)


def test_separable_in_3d():
    a, b, c = (
        torch.rand(16, dtype=torch.float64),
        torch.rand(12, dtype=torch.float64),
        torch.rand(8, dtype=torch.float64),
    )
    vol = (a[:, None, None] * b[None, :, None] * c[None, None, :])[None]
    out = BicubicDownsample(scale=2)(vol)[0]
    ra, rb, rc = (bicubic_resize(v[None], 0.5)[0] for v in (a, b, c))
    torch.testing.assert_close(out, ra[:, None, None] * rb[None, :, None] * rc[None, None, :])


def test_matches_pil_bicubic_in_the_interior():
    """PIL's BICUBIC also uses a = -0.5 widened by the scale; it only treats the borders differently."""
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 255, size=(40, 52)).astype(np.float32)
    ours = bicubic_resize(torch.from_numpy(img)[None], 0.5)[0].numpy()
    pil = np.asarray(Image.fromarray(img, mode="F").resize((26, 20), Image.BICUBIC))
    np.testing.assert_allclose(ours[2:-2, 2:-2], pil[2:-2, 2:-2], atol=1e-3)


def test_dictionary_quantize_divisor_and_meta():
    hr = MetaTensor(torch.rand(3, 20, 16) * 255)
    out = BicubicDownsampled("hr", lr_key="lr", scale=2, quantize=True, divisor=255.0)({"hr": hr})
    lr = out["lr"]
    assert tuple(lr.shape) == (3, 10, 8) and "hr" in out
    levels = lr * 255.0
    torch.testing.assert_close(levels, levels.round(), atol=1e-4, rtol=0)
    assert lr.min() >= 0 and lr.max() <= 1
    exact = bicubic_resize(hr.as_tensor(), 0.5).clamp(0, 255).round() / 255.0
    torch.testing.assert_close(lr.as_tensor(), exact)
    assert isinstance(lr, MetaTensor)
    assert lr.pixdim[:2].tolist() == [2.0, 2.0]  # the voxel size doubled
    with pytest.raises(ValueError, match="lr_key"):
        BicubicDownsampled(["a", "b"], lr_key="lr")
    with pytest.raises(ValueError, match="scale"):
        BicubicDownsample(scale=0)
