"""DRIVE datalists (layout, errors that list what is missing), the MONAI loading recipe, the synthetic retina set."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monai_cnf.data import drive_datalist, drive_load_transforms, make_synthetic_drive, synthesize_retina

SIZE = (96, 88)  # (H, W): small and not square, so a transposition would show


@pytest.fixture(scope="module")
def drive_root(tmp_path_factory) -> Path:
    return make_synthetic_drive(tmp_path_factory.mktemp("drive"), seed=3, num_train=3, num_test=2, image_size=SIZE)


def _copy(root: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "DRIVE"
    shutil.copytree(root, dst)
    return dst


def test_layout_names_and_formats(drive_root):
    assert sorted(p.name for p in (drive_root / "training" / "images").iterdir()) == [
        "21_training.tif",
        "22_training.tif",
        "23_training.tif",
    ]
    img = Image.open(drive_root / "test" / "images" / "01_test.tif")
    assert img.mode == "RGB" and img.size == (SIZE[1], SIZE[0])
    lab = Image.open(drive_root / "test" / "1st_manual" / "01_manual1.gif")
    assert lab.mode == "L" and set(np.unique(np.asarray(lab)).tolist()) <= {0, 255}
    lab2 = Image.open(drive_root / "test" / "2nd_manual" / "01_manual2.gif")
    assert lab2.mode == "P" and set(np.unique(np.asarray(lab2)).tolist()) == {0, 1}  # like DRIVE's 2nd observer
    assert not (drive_root / "training" / "2nd_manual").exists()


def test_datalist_both_splits(drive_root):
    train = drive_datalist(drive_root, "training")
    assert drive_datalist(drive_root, "train") == train
    assert [sorted(d) for d in train] == [["image", "label", "mask"]] * 3
    assert [Path(d["label"]).name for d in train] == ["21_manual1.gif", "22_manual1.gif", "23_manual1.gif"]
    assert Path(train[1]["mask"]).name == "22_training_mask.gif"
    test = drive_datalist(drive_root, "test")
    assert [Path(d["label2"]).name for d in test] == ["01_manual2.gif", "02_manual2.gif"]
    assert sorted(drive_datalist(drive_root, "test", second_observer=False)[0]) == ["image", "label", "mask"]


def test_parent_folder_with_drive_subfolder(drive_root, tmp_path):
    """The archive's top-level DRIVE/ folder: passing the folder that holds it works too."""
    dst = _copy(drive_root, tmp_path)
    assert [Path(d["image"]).name for d in drive_datalist(dst.parent, "training")] == [
        "21_training.tif",
        "22_training.tif",
        "23_training.tif",
    ]


def test_missing_annotation_is_listed(drive_root, tmp_path):
    dst = _copy(drive_root, tmp_path)
    (dst / "training" / "mask" / "22_training_mask.gif").unlink()
    (dst / "training" / "1st_manual" / "23_manual1.gif").unlink()
    with pytest.raises(FileNotFoundError) as err:
        drive_datalist(dst, "training")
    msg = str(err.value)
    assert "22_training_mask" in msg and "23_manual1" in msg and "2 annotation file(s) missing" in msg


def test_unmatched_annotation_is_listed(drive_root, tmp_path):
    dst = _copy(drive_root, tmp_path)
    (dst / "test" / "images" / "02_test.tif").unlink()
    with pytest.raises(ValueError, match=r"02_manual1\.gif") as err:
        drive_datalist(dst, "test")
    assert "02_manual2.gif" in str(err.value) and "02_test_mask.gif" in str(err.value)


def test_empty_or_wrong_layout(drive_root, tmp_path):
    dst = _copy(drive_root, tmp_path)
    for p in (dst / "test" / "images").iterdir():
        p.unlink()
    for sub in ("1st_manual", "2nd_manual", "mask"):
        shutil.rmtree(dst / "test" / sub)
        (dst / "test" / sub).mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        drive_datalist(dst, "test")
    shutil.rmtree(dst / "training" / "mask")
    with pytest.raises(FileNotFoundError, match="mask") as err:
        drive_datalist(dst, "training")
    assert "21_training_mask.gif" in str(err.value)  # says what was expected
    with pytest.raises(FileNotFoundError, match="training/ or test/"):
        drive_datalist(tmp_path / "DRIVE" / "training", "training")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        drive_datalist(tmp_path / "nowhere", "training")
    with pytest.raises(ValueError, match="split"):
        drive_datalist(drive_root, "validation")


def test_missing_second_observer_folder(drive_root, tmp_path):
    dst = _copy(drive_root, tmp_path)
    shutil.rmtree(dst / "test" / "2nd_manual")
    with pytest.raises(FileNotFoundError, match="second_observer=False"):
        drive_datalist(dst, "test")
    assert len(drive_datalist(dst, "test", second_observer=False)) == 2


def test_load_transforms_orientation_and_values(drive_root):
    from monai.transforms import Compose

    item = drive_datalist(drive_root, "test")[0]
    out = Compose(drive_load_transforms(("image", "label", "mask", "label2")))(item)
    h, w = SIZE
    assert tuple(out["image"].shape) == (3, h, w)
    for k in ("label", "mask", "label2"):
        assert tuple(out[k].shape) == (1, h, w)
        assert set(np.unique(out[k].numpy()).tolist()) <= {0.0, 1.0}
    raw = np.asarray(Image.open(item["image"]), dtype=np.float32).transpose(2, 0, 1) / 255.0
    np.testing.assert_allclose(out["image"].numpy(), raw, atol=1e-6)  # same row-major order as the file
    raw_label = np.asarray(Image.open(item["label"])) > 0
    np.testing.assert_array_equal(out["label"].numpy()[0], raw_label.astype(np.float32))
    raw_label2 = np.asarray(Image.open(item["label2"])) > 0  # palette indices {0, 1}
    np.testing.assert_array_equal(out["label2"].numpy()[0], raw_label2.astype(np.float32))
    assert out["label2"].sum() > 0
    with pytest.raises(ValueError, match="image_key"):
        drive_load_transforms(("label",))


def test_synthetic_is_deterministic_and_per_image_seeded(drive_root, tmp_path):
    again = make_synthetic_drive(tmp_path / "a", seed=3, num_train=1, num_test=3, image_size=SIZE)
    for rel in ("training/images/21_training.tif", "test/1st_manual/02_manual1.gif", "test/2nd_manual/01_manual2.gif"):
        a = np.asarray(Image.open(drive_root / rel))
        b = np.asarray(Image.open(again / rel))
        np.testing.assert_array_equal(a, b)  # same (seed, split, index) -> same image, whatever num_train/test
    other = make_synthetic_drive(tmp_path / "b", seed=4, num_train=1, num_test=0, image_size=SIZE)
    a = np.asarray(Image.open(drive_root / "training/images/21_training.tif"))
    assert not np.array_equal(a, np.asarray(Image.open(other / "training/images/21_training.tif")))


def test_synthetic_retina_statistics_at_drive_size():
    """At DRIVE's size: vessel fraction in the FOV like DRIVE's (~8-15 %), vessels darker, observers close."""
    fractions = []
    for k in range(2):
        r = synthesize_retina(np.random.default_rng([0, 1, k]))
        assert r.image.shape == (584, 565, 3) and r.image.dtype == np.uint8
        assert r.label.dtype == bool and r.mask.dtype == bool
        assert not r.label[~r.mask].any() and not r.label2[~r.mask].any()
        frac = r.label[r.mask].mean()
        fractions.append(frac)
        assert 0.07 < frac < 0.18
        assert 0.07 < r.label2[r.mask].mean() < 0.18
        agree = (r.label == r.label2)[r.mask].mean()
        assert 0.9 < agree < 0.995  # a second grader: close, not identical
        green = r.image[..., 1].astype(float)
        assert green[r.label].mean() < 0.85 * green[r.mask & ~r.label].mean()  # vessels are darker
        assert r.image[~r.mask].mean() < 10  # black outside the field of view
        fov_fraction = r.mask.mean()
        assert 0.6 < fov_fraction < 0.75  # a circle of radius ~0.47 * 565 in 565 x 584
    assert abs(fractions[0] - fractions[1]) > 1e-4  # images differ


def test_synthetic_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="num_train"):
        make_synthetic_drive(tmp_path, num_train=100)
    with pytest.raises(ValueError, match="image_size"):
        synthesize_retina(np.random.default_rng(0), (16, 16))


def test_synthetic_reuse_regeneration_and_refusal(tmp_path):
    root = make_synthetic_drive(tmp_path / "s", seed=1, num_train=2, num_test=1, image_size=(48, 40))
    first = root / "training" / "images" / "21_training.tif"
    stamp = first.stat().st_mtime_ns
    make_synthetic_drive(root, seed=1, num_train=2, num_test=1, image_size=(48, 40))
    assert first.stat().st_mtime_ns == stamp  # same settings: reused, not rewritten
    # an interrupted run (manifest not complete, a file missing) is completed with the same image
    missing = root / "test" / "2nd_manual" / "01_manual2.gif"
    before = np.asarray(Image.open(missing))
    missing.unlink()
    manifest = root / "synthetic_drive.json"
    manifest.write_text(manifest.read_text().replace('"complete": true', '"complete": false'))
    make_synthetic_drive(root, seed=1, num_train=2, num_test=1, image_size=(48, 40))
    np.testing.assert_array_equal(np.asarray(Image.open(missing)), before)
    # other settings: regenerated, and images beyond the new counts are gone
    make_synthetic_drive(root, seed=1, num_train=1, num_test=1, image_size=(40, 40))
    train = drive_datalist(root, "training")
    assert len(train) == 1 and Image.open(train[0]["image"]).size == (40, 40)
    # a folder with DRIVE-like files not written by the generator (e.g. real DRIVE) is never overwritten
    manifest.unlink()
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        make_synthetic_drive(root, seed=1, num_train=1, num_test=1, image_size=(40, 40))
