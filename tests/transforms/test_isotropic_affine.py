"""RandIsotropicAffine(d): parameter distributions, geometry, determinism, label values, inversion, 3D."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd
from scipy import ndimage, stats

from monai_cnf.transforms import (
    IsotropicAffineGrid,
    RandIsotropicAffine,
    RandIsotropicAffineD,
    RandIsotropicAffined,
    RandIsotropicAffineDict,
)

N_DRAWS = 4000


def _draws(grid: IsotropicAffineGrid, n: int = N_DRAWS):
    rot, scale, shear = [], [], []
    for _ in range(n):
        grid.randomize()
        rot.append(grid.rotate_angles.copy())
        scale.append(grid.scale_factor)
        shear.append(grid.shear_angles.copy())
    return np.array(rot), np.array(scale), np.array(shear)


def test_aliases():
    assert RandIsotropicAffineD is RandIsotropicAffined
    assert RandIsotropicAffineDict is RandIsotropicAffined


def test_parameter_distributions_match_the_paper():
    grid = IsotropicAffineGrid()  # defaults: rotation U(-pi, pi), scale U(0.8, 1.2), shear N(0, 10 deg)
    grid.set_random_state(123)
    rot, scale, shear = _draws(grid)
    # one uniform scale factor in [0.8, 1.2)
    assert scale.min() >= 0.8 and scale.max() < 1.2
    assert stats.kstest(scale, stats.uniform(loc=0.8, scale=0.4).cdf).pvalue > 1e-3
    assert abs(scale.mean() - 1.0) < 0.01  # sd of the mean: 0.115 / sqrt(4000) = 0.0018
    # rotation uniform over 360 degrees (each of the 3 axes)
    for a in range(3):
        assert stats.kstest(rot[:, a], stats.uniform(loc=-math.pi, scale=2 * math.pi).cdf).pvalue > 1e-3
    # shear angles ~ N(0, 10 deg), independent
    flat = shear.ravel()
    assert stats.kstest(flat, stats.norm(scale=10.0).cdf).pvalue > 1e-3
    assert abs(flat.mean()) < 0.3 and abs(flat.std() - 10.0) < 0.3  # se: 10/sqrt(24000)=0.065, 0.046
    assert abs(np.corrcoef(shear[:, 0], shear[:, 1])[0, 1]) < 0.06


def test_custom_ranges_are_respected():
    grid = IsotropicAffineGrid(rotate_range=(0.1, 0.2), scale_range=(0.5, 0.6), shear_std=2.0)
    grid.set_random_state(0)
    rot, scale, shear = _draws(grid, 500)
    assert rot.min() >= 0.1 and rot.max() < 0.2
    assert scale.min() >= 0.5 and scale.max() < 0.6
    assert abs(shear.std() - 2.0) < 0.15
    grid = IsotropicAffineGrid(rotate_range=0.3)  # x means (-x, x)
    grid.set_random_state(0)
    rot, _, _ = _draws(grid, 500)
    assert rot.min() >= -0.3 and rot.max() < 0.3 and rot.min() < -0.25


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_scale_is_isotropic_in_the_matrix(spatial_dims):
    """A = R H S with S = s I: removing the rotation and shear leaves s times the identity."""
    grid = IsotropicAffineGrid()
    grid.set_random_state(7)
    for _ in range(20):
        grid.randomize()
        a = grid.forward_matrix(spatial_dims)
        rot = grid.rotation_matrix(spatial_dims)
        k = 2 if spatial_dims == 2 else 6
        tan = np.tan(np.deg2rad(grid.shear_angles[:k]))
        shear = np.eye(spatial_dims)
        off = [(i, j) for i in range(spatial_dims) for j in range(spatial_dims) if i != j]
        for (i, j), t in zip(off, tan, strict=True):  # MONAI's create_shear layout, row by row
            shear[i, j] = t
        np.testing.assert_allclose(rot @ rot.T, np.eye(spatial_dims), atol=1e-12)
        residual = np.linalg.inv(rot @ shear) @ a[:spatial_dims, :spatial_dims]
        np.testing.assert_allclose(residual, grid.scale_factor * np.eye(spatial_dims), atol=1e-10)


def test_image_content_moves_by_the_forward_matrix():
    """Compare with scipy's affine_transform using the same matrix about the image centre (bilinear)."""
    t = RandIsotropicAffine(padding_mode="zeros", mode="bilinear").set_random_state(3)
    yy, xx = np.mgrid[0:48, 0:40].astype(np.float64)
    img = np.sin(xx / 5.0) + np.cos(yy / 7.0) + 3.0  # smooth, no edges inside
    out = t(torch.as_tensor(img, dtype=torch.float32)[None])[0].numpy()
    a = t.rand_affine_grid.forward_matrix(2)
    ainv = np.linalg.inv(a[:2, :2])
    c = (np.array(img.shape) - 1) / 2.0
    ref = ndimage.affine_transform(img, ainv, offset=c - ainv @ c, order=1, mode="constant", cval=0.0)
    inside = ndimage.binary_erosion(ref > 0, iterations=3)
    assert inside.sum() > 500
    np.testing.assert_allclose(out[inside], ref[inside], atol=1e-4)


def test_scale_direction_enlarges_content():
    t = RandIsotropicAffine(rotate_range=0.0, scale_range=(1.2, 1.2), shear_std=0.0, mode="nearest")
    img = torch.zeros(1, 64, 64)
    img[0, 22:42, 22:42] = 1.0  # 20 x 20 square, centred
    out = t(img)
    assert out.sum().item() == pytest.approx(400 * 1.44, rel=0.05)


def test_determinism_and_seed_dependence():
    data = {"image": torch.rand(3, 32, 40), "label": (torch.rand(1, 32, 40) > 0.7).float()}

    def run(seed):
        t = RandIsotropicAffined(["image", "label"], mode=("bilinear", "nearest")).set_random_state(seed)
        return t(data)

    a, b, c = run(5), run(5), run(6)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    assert not torch.equal(a["image"], c["image"])


@pytest.mark.parametrize("shape", [(1, 40, 36), (1, 20, 18, 16)])
def test_nearest_keeps_label_values_and_image_label_share_one_draw(shape):
    label = (torch.rand(*shape) > 0.6).float()
    t = RandIsotropicAffined(["image", "label"], mode=("nearest", "nearest")).set_random_state(0)
    out = t({"image": label.clone(), "label": label})
    assert set(torch.unique(out["label"]).tolist()) <= {0.0, 1.0}
    assert torch.equal(out["image"], out["label"])  # the same geometry for every key
    assert out["label"].shape == label.shape


def test_prob_zero_is_identity():
    x = torch.rand(1, 16, 16)
    out = RandIsotropicAffined("image", prob=0.0)({"image": x})["image"]
    assert torch.allclose(out, x)


@pytest.mark.parametrize("shape", [(2, 48, 40), (1, 24, 20, 22)])
def test_invertd_undoes_the_affine(shape):
    spatial = shape[1:]
    grids = np.meshgrid(*[np.linspace(0, 1, s) for s in spatial], indexing="ij")
    smooth = sum(np.sin(3 * g + i) for i, g in enumerate(grids))[None].repeat(shape[0], 0)
    data = {"image": MetaTensor(torch.as_tensor(smooth, dtype=torch.float32))}
    pipeline = Compose(
        [RandIsotropicAffined("image", scale_range=(1.0, 1.1), shear_std=3.0, padding_mode="border")]
    ).set_random_state(1)
    out = pipeline(data)
    out["pred"] = out["image"].clone()
    inv = Invertd("pred", transform=pipeline, orig_keys="image", nearest_interp=False)(out)
    assert tuple(inv["pred"].shape) == shape
    centre = tuple([slice(None)] + [slice(s // 4, 3 * s // 4) for s in spatial])
    err = (inv["pred"][centre] - data["image"][centre]).abs().max().item()
    # two bilinear resamplings of a smooth image (range ~[-3, 3]); measured 0.002 (2D) and 0.010 (3D), so 0.03
    # leaves 3x margin (the earlier 0.1 let a pixel-scale misalignment through)
    assert err < 0.03
    assert not torch.allclose(out["image"], data["image"], atol=0.1)  # it did move


def test_uniform_rotation_3d_is_haar():
    """For a rotation uniform over SO(3), the angle has CDF (t - sin t) / pi on [0, pi]."""
    grid = IsotropicAffineGrid(uniform_rotation=True)
    grid.set_random_state(11)
    angles = []
    for _ in range(3000):
        grid.randomize()
        r = grid.rotation_matrix(3)
        angles.append(math.acos(np.clip((np.trace(r) - 1) / 2, -1, 1)))
    assert stats.kstest(angles, lambda t: (t - np.sin(t)) / math.pi).pvalue > 1e-3


def test_argument_errors():
    with pytest.raises(ValueError, match="scale_range"):
        RandIsotropicAffine(scale_range=(1.2, 0.8))
    with pytest.raises(ValueError, match="shear_std"):
        RandIsotropicAffine(shear_std=-1.0)
    with pytest.raises(ValueError, match="rotate_range"):
        RandIsotropicAffine(rotate_range=(1.0, 2.0, 3.0, 4.0))


def test_picklable_for_dataloader_workers():
    import pickle

    t = RandIsotropicAffined(["image"], uniform_rotation=True)
    clone = pickle.loads(pickle.dumps(t))
    x = {"image": torch.rand(1, 12, 12, 12)}
    t.set_random_state(4)
    clone.set_random_state(4)
    assert torch.equal(t(x)["image"], clone(x)["image"])
