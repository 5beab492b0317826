"""Padding / cropping: PadToSquare(d), DivisibleCrop(d), and exact inversion through Invertd (with MONAI's pads)."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, DivisiblePadd, Invertd, SpatialPadd

from monai_cnf.transforms import (
    BinarizeLabel,
    BinarizeLabeld,
    DivisibleCrop,
    DivisibleCropd,
    PadToSquare,
    PadToSquared,
    ToRGB,
    ToRGBd,
)


@pytest.mark.parametrize(
    ("shape", "k", "expected"),
    [
        ((3, 5, 3), 1, (3, 5, 5)),
        ((3, 5, 3), 4, (3, 8, 8)),
        ((1, 320, 480), 16, (1, 480, 480)),
        ((1, 7, 9, 4), 2, (1, 10, 10, 10)),
    ],
)
def test_pad_to_square_shapes(shape, k, expected):
    assert tuple(PadToSquare(k=k)(torch.ones(shape)).shape) == expected


def test_pad_to_square_pads_zeros_at_right_bottom():
    x = torch.arange(1.0, 16.0).reshape(1, 3, 5)
    out = PadToSquare(k=4)(x)
    assert torch.equal(out[:, :3, :5], x)  # the data stays at the top-left
    assert out[:, 3:, :].abs().sum() == 0 and out[:, :, 5:].abs().sum() == 0
    sym = PadToSquare(k=1, method="symmetric")(x)  # 3 -> 5 rows: one above, one below
    assert torch.equal(sym[:, 1:4, :], x)


def test_pad_to_square_invertd_is_exact_and_crops_predictions_back():
    x = MetaTensor(torch.rand(3, 37, 50))
    pipe = Compose([PadToSquared("image", k=8)])
    out = pipe({"image": x})
    assert tuple(out["image"].shape) == (3, 56, 56)
    out["pred"] = out["image"] * 2.0  # a "prediction" on the padded square
    inv = Invertd("pred", transform=pipe, orig_keys="image")(out)
    assert torch.equal(inv["pred"], x * 2.0)
    assert torch.equal(pipe.inverse(out)["image"].as_tensor(), x.as_tensor())


@pytest.mark.parametrize("spatial", [(29, 31), (9, 12, 7)])
def test_monai_pads_to_1024_and_to_multiples_invert_exactly(spatial):
    size = (64,) * len(spatial)  # the DRIVE recipe pads to 1024; a small size keeps the test fast
    x = MetaTensor(torch.rand(2, *spatial))
    y = MetaTensor((torch.rand(1, *spatial) > 0.5).float())
    pipe = Compose([SpatialPadd(["image", "label"], spatial_size=size), DivisiblePadd(["image", "label"], k=16)])
    out = pipe({"image": x, "label": y})
    assert tuple(out["image"].shape[1:]) == size
    back = pipe.inverse(out)
    assert torch.equal(back["image"].as_tensor(), x.as_tensor()) and torch.equal(
        back["label"].as_tensor(), y.as_tensor()
    )


def test_divisible_crop():
    x = torch.arange(3.0 * 391 * 586).reshape(3, 391, 586)
    out = DivisibleCrop(2)(x)
    assert tuple(out.shape) == (3, 390, 586) and torch.equal(out, x[:, :390, :])
    sym = DivisibleCrop(4, method="symmetric")(x)  # 391 -> 388 (drop 1 before, 2 after); 586 -> 584
    assert tuple(sym.shape) == (3, 388, 584) and torch.equal(sym, x[:, 1:389, 1:585])
    vol = DivisibleCrop((2, 3, 1))(torch.ones(1, 5, 7, 3))
    assert tuple(vol.shape) == (1, 4, 6, 3)
    d = DivisibleCropd("hr", k=2)({"hr": MetaTensor(x)})
    assert tuple(d["hr"].shape) == (3, 390, 586)
    with pytest.raises(ValueError, match="spatial dims"):
        DivisibleCrop((2, 2, 2))(torch.ones(1, 4, 4))


def test_binarize_label_values():
    x = torch.tensor([[[0.0, 1.0, 255.0, 0.2, -1.0]]])
    assert BinarizeLabel()(x).tolist() == [[[0.0, 1.0, 1.0, 1.0, 0.0]]]
    assert BinarizeLabel(threshold=0.5)(x).tolist() == [[[0.0, 1.0, 1.0, 0.0, 0.0]]]
    out = BinarizeLabeld(["label", "label2"])({"label": x * 255, "label2": (x > 0.5).to(torch.uint8)})
    assert out["label"].dtype == torch.float32 and out["label2"].dtype == torch.float32
    assert set(torch.unique(out["label2"]).tolist()) == {0.0, 1.0}


def test_to_rgb():
    grey = torch.rand(1, 4, 5)
    rgb = ToRGB()(grey)
    assert tuple(rgb.shape) == (3, 4, 5) and all(torch.equal(rgb[c], grey[0]) for c in range(3))
    assert tuple(ToRGB()(torch.rand(4, 4, 5)).shape) == (3, 4, 5)
    assert tuple(ToRGBd("x")({"x": torch.rand(3, 2, 2)})["x"].shape) == (3, 2, 2)
    with pytest.raises(ValueError, match="channels"):
        ToRGB()(torch.rand(5, 2, 2))
