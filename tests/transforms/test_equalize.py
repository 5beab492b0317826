"""CLAHE per channel (AdaptiveHistogramEqualize[d]): shapes, types, meta, locality of the tiles, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from skimage.exposure import equalize_adapthist

from monai_cnf.transforms import AdaptiveHistogramEqualize, AdaptiveHistogramEqualized


def _retina_like(shape=(3, 48, 40), seed=0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    img = 0.3 + 0.1 * rng.random(shape)
    img[:, :, shape[-1] // 2] -= 0.15  # a dark "vessel" of low contrast
    return torch.as_tensor(img, dtype=torch.float32)


def test_each_channel_is_scikit_images_clahe_of_that_channel():
    img = _retina_like()
    out = AdaptiveHistogramEqualize(clip_limit=0.02)(img)
    assert out.shape == img.shape and out.dtype == img.dtype
    for c in range(3):
        expected = equalize_adapthist(img[c].double().numpy(), clip_limit=0.02)
        np.testing.assert_allclose(out[c].numpy(), expected, atol=1e-6)
    # the vessel's contrast to its surroundings grows
    col = img.shape[-1] // 2
    assert (out[1, :, col - 3] - out[1, :, col]).mean() > (img[1, :, col - 3] - img[1, :, col]).mean()


def test_types_and_meta_are_kept_and_3d_works():
    meta = MetaTensor(_retina_like(), meta={"filename_or_obj": "x.png"})
    out = AdaptiveHistogramEqualize()(meta)
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "x.png"
    arr = AdaptiveHistogramEqualize()(_retina_like().numpy())
    assert isinstance(arr, np.ndarray) and arr.dtype == np.float32
    x = _retina_like((1, 16, 16, 16))
    vol = AdaptiveHistogramEqualize(kernel_size=8)(x)
    assert vol.shape == (1, 16, 16, 16) and 0.0 <= float(vol.min()) and float(vol.max()) <= 1.0
    np.testing.assert_allclose(vol[0].numpy(), equalize_adapthist(x[0].double().numpy(), kernel_size=8), atol=1e-6)


def test_dictionary_version_touches_only_its_keys():
    data = {"image": _retina_like(), "label": torch.ones(1, 48, 40)}
    out = AdaptiveHistogramEqualized("image")(data)
    assert torch.equal(out["label"], data["label"])
    torch.testing.assert_close(out["image"], AdaptiveHistogramEqualize()(data["image"]))


@pytest.mark.parametrize(
    ("img", "message"),
    [
        (torch.zeros(8, 8), "channel-first"),
        (torch.full((1, 8, 8), float("nan")), "NaN"),
    ],
)
def test_bad_images_are_refused_by_name(img, message):
    with pytest.raises(ValueError, match=message):
        AdaptiveHistogramEqualize()(img)


def test_clip_limit_out_of_range_is_refused():
    with pytest.raises(ValueError, match="clip_limit"):
        AdaptiveHistogramEqualize(clip_limit=2.0)
