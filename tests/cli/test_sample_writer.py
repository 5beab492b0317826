"""cnf sample's writer: PNG values follow the declared value range, NIfTI keeps the values, axes as documented."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from monai_cnf.bundle.sample import output_names, to_png_array, write_outputs


def test_binary_maps(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    samples = (rng.random((3, 1, 6, 4)) < 0.5).astype(np.float32)  # (S, C, X, Y) in MONAI's (x, y) order
    mean, std = samples.mean(0), samples.std(0)
    files = write_outputs(tmp_path, samples, mean, std, value_range=[0, 1], transpose=True)
    assert sorted(files) == sorted(output_names(3))
    png = np.asarray(Image.open(tmp_path / "sample_001.png"))
    assert png.shape == (4, 6) and png.dtype == np.uint8  # rows = y, columns = x
    np.testing.assert_array_equal(png, samples[1, 0].T * 255)
    mean_png = np.asarray(Image.open(tmp_path / "mean.png"))
    np.testing.assert_array_equal(mean_png, np.round(mean[0].T * 255))
    std_png = np.asarray(Image.open(tmp_path / "std.png"))
    np.testing.assert_array_equal(std_png, np.clip(np.round(std[0].T / 0.5 * 255), 0, 255))  # std <= 0.5 -> 255
    nii = nib.load(tmp_path / "samples.nii.gz")
    assert nii.shape == (6, 4, 3) and nii.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(nii.dataobj)[..., 2], samples[2, 0])
    np.testing.assert_allclose(nib.load(tmp_path / "mean.nii.gz").get_fdata(), mean[0], atol=1e-7)
    np.testing.assert_allclose(nib.load(tmp_path / "std.nii.gz").get_fdata(), std[0], atol=1e-7)


def test_rgb_8bit_maps(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    samples = rng.integers(0, 256, size=(2, 3, 5, 5)).astype(np.float32)
    files = write_outputs(tmp_path, samples, samples.mean(0), samples.std(0), value_range=[0, 255], transpose=False)
    assert files["sample_000.png"] == (5, 5, 3) and files["samples.nii.gz"] == (5, 5, 3, 2)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "sample_000.png")), np.moveaxis(samples[0], 0, -1))
    assert nib.load(tmp_path / "mean.nii.gz").shape == (5, 5, 3)


def test_png_scaling_clips() -> None:
    arr = np.array([[[-1.0, 0.0, 0.5, 1.0, 2.0]]])
    np.testing.assert_array_equal(to_png_array(arr, 0.0, 1.0, transpose=False), [[0, 0, 128, 255, 255]])


def test_inference_preset_overlays(tiny_bundle: Path) -> None:
    """``paper`` adds inference_paper.json when the bundle has one; shipped weights load with their recorded preset."""
    import json

    from monai_cnf.bundle import load_bundle, load_trained

    bundle = load_bundle(tiny_bundle)
    assert [p.name for p in bundle.config_files("inference", "paper")] == ["inference.json"]
    (tiny_bundle / "configs" / "inference_paper.json").write_text(json.dumps({"num_samples": 2}))
    bundle = load_bundle(tiny_bundle)
    assert [p.name for p in bundle.config_files("inference", "paper")] == ["inference.json", "inference_paper.json"]
    assert [p.name for p in bundle.config_files("inference", "cpu")] == ["inference.json"]
    trained = load_trained(bundle)  # nothing recorded: the device's preset
    assert (trained.provenance.preset, trained.provenance.recorded_by) == ("cpu", "device default")
    bundle.record_weights(bundle.weights(), "paper", "cnf")
    trained = load_trained(bundle)
    assert (trained.provenance.preset, trained.provenance.recorded_by) == ("paper", "models/provenance.json")
    assert trained.parser.get_parsed_content("num_samples") == 2  # inference_paper.json was merged
