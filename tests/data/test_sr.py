"""SR data: folder datalists, (HR, LR) pair transforms, scikit-image defaults, the ImageNet32/64 npz reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.transforms import Compose
from PIL import Image

from monai_cnf.data import (
    SKIMAGE_SR_IMAGES,
    ImageNetDownsampledDataset,
    skimage_datalist,
    sr_datalist,
    sr_pair_dataset,
    sr_pair_transforms,
)
from monai_cnf.transforms import BicubicDownsampled, bicubic_resize


def _write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def test_sr_datalist_layouts(tmp_path):
    rng = np.random.default_rng(0)
    flat = tmp_path / "Set5"
    for name in ("baby.png", "bird.png"):
        _write(flat / name, rng.integers(0, 256, (10, 12, 3), dtype=np.uint8))
    (flat / "notes.txt").write_text("not an image")
    assert [Path(d["label"]).name for d in sr_datalist(flat)] == ["baby.png", "bird.png"]
    assert list(sr_datalist(flat, key="hr")[0]) == ["hr"]
    packaged = tmp_path / "BSD100"  # SelfExSR-style: HR/ and LR/ sub-folders, suffixed names
    _write(packaged / "HR" / "img_001_SRF_2_HR.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    _write(packaged / "LR" / "img_001_SRF_2_LR.png", rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    assert [Path(d["label"]).name for d in sr_datalist(packaged)] == ["img_001_SRF_2_HR.png"]
    mixed = tmp_path / "mixed"
    _write(mixed / "a_HR.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    _write(mixed / "a_LR.png", rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    _write(mixed / "sub" / "b.bmp", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    assert [Path(d["label"]).name for d in sr_datalist(mixed)] == ["a_HR.png"]
    assert [Path(d["label"]).name for d in sr_datalist(mixed, recursive=True)] == ["a_HR.png", "b.bmp"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        sr_datalist(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sr_datalist(tmp_path / "nowhere")


def test_pair_transforms_modcrop_values_and_grey(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (25, 36, 3), dtype=np.uint8)  # odd height: cropped to 24
    grey = rng.integers(0, 256, (13, 9), dtype=np.uint8)
    f_rgb = _write(tmp_path / "rgb.png", rgb)
    f_grey = _write(tmp_path / "grey.bmp", grey)
    pipe = Compose(sr_pair_transforms(scale=2))
    out = pipe({"label": str(f_rgb)})
    hr, lr = out["label"], out["image"]
    assert tuple(hr.shape) == (3, 24, 36) and tuple(lr.shape) == (3, 12, 18)
    np.testing.assert_array_equal(hr.numpy(), rgb[:24].transpose(2, 0, 1).astype(np.float32))  # top-left crop
    expected = bicubic_resize(torch.as_tensor(rgb[:24].transpose(2, 0, 1), dtype=torch.float32), 0.5)
    expected = expected.clamp(0, 255).round() / 255.0
    torch.testing.assert_close(lr.as_tensor(), expected)
    assert lr.min() >= 0 and lr.max() <= 1
    g = pipe({"label": str(f_grey)})
    assert tuple(g["label"].shape) == (3, 12, 8) and tuple(g["image"].shape) == (3, 6, 4)
    assert torch.equal(g["label"][0], g["label"][2])
    patch = Compose(sr_pair_transforms(scale=2, patch_size=8)).set_random_state(0)({"label": str(f_rgb)})
    assert tuple(patch["label"].shape) == (3, 8, 8) and tuple(patch["image"].shape) == (3, 4, 4)
    with pytest.raises(ValueError, match="multiple of scale"):
        sr_pair_transforms(scale=2, patch_size=7)


def test_skimage_defaults_exist_offline_and_are_rgb():
    dl = skimage_datalist()
    assert len(dl) == len(SKIMAGE_SR_IMAGES)
    for d in dl:
        img = Image.open(d["label"])
        assert img.mode == "RGB" and min(img.size) >= 300
    ds = sr_pair_dataset(None, scale=2, patch_size=16)
    item = ds[0]
    assert tuple(item["label"].shape) == (3, 16, 16) and tuple(item["image"].shape) == (3, 8, 8)
    assert torch.equal(item["label"], item["label"].round())  # integer-valued HR
    with pytest.raises(ValueError, match="unknown"):
        skimage_datalist(["lena"])


def test_imagenet_npz_reader(tmp_path):
    r = 4
    rng = np.random.default_rng(2)
    data1 = rng.integers(0, 256, (3, 3 * r * r), dtype=np.uint8)
    data2 = rng.integers(0, 256, (2, 3 * r * r), dtype=np.uint8)
    np.savez(tmp_path / "train_data_batch_1.npz", data=data1, labels=np.array([1, 5, 1000]), mean=np.zeros(48))
    np.savez(tmp_path / "train_data_batch_2.npz", data=data2, labels=[7, 8])
    ds = ImageNetDownsampledDataset(tmp_path, resolution=r)
    assert len(ds) == 5 and ds.resolution == r
    item = ds[4]
    assert item["class"] == 8 and item["label"].dtype == torch.float32
    # row-major (C, H, W): value of channel c, row y, column x is at c*R*R + y*R + x
    for c, y, x in [(0, 0, 0), (1, 2, 3), (2, 3, 1)]:
        assert item["label"][c, y, x].item() == float(data2[1, c * r * r + y * r + x])
    inferred = ImageNetDownsampledDataset([tmp_path / "train_data_batch_1.npz"])
    assert inferred.resolution == r and len(inferred) == 3
    pairs = ImageNetDownsampledDataset(
        tmp_path / "train_data_batch_2.npz", transform=BicubicDownsampled("label", lr_key="image", divisor=255.0)
    )
    assert tuple(pairs[0]["image"].shape) == (3, 2, 2)
    with pytest.raises(ValueError, match="3x8x8"):
        ImageNetDownsampledDataset(tmp_path, resolution=8)
    np.savez(tmp_path / "bad.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="'data' and 'labels'"):
        ImageNetDownsampledDataset(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError, match="not found"):
        ImageNetDownsampledDataset(tmp_path / "missing.npz")
