"""Any image MONAI reads (issue 12, item 4): the bundles load PNG/TIFF/GIF/JPEG, NIfTI and DICOM with MONAI's
readers, and ``cnf sample`` writes NIfTI with the input's affine. Images are made here; the shipped weights are used."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai_cnf.cli.main import app
from PIL import Image
from typer.testing import CliRunner

from monai_cnf.data import image_readers, is_row_major

ROOT = Path(__file__).resolve().parents[2]
DRIVE = ROOT / "bundles" / "drive_vessel"
SR = ROOT / "bundles" / "super_resolution"

pydicom = pytest.importorskip("pydicom")


def write_dicom(path: Path, pixels: np.ndarray, spacing=(0.5, 0.25), position=(5.0, 6.0, 7.0)) -> Path:
    """A single-frame secondary-capture DICOM of ``pixels`` ``(rows, columns)`` or ``(rows, columns, 3)`` uint8."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "OP", "anonymous"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Rows, ds.Columns = pixels.shape[:2]
    colour = pixels.ndim == 3
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = "RGB" if colour else "MONOCHROME2"
    if colour:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = list(position)
    ds.PixelSpacing = list(spacing)
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


def _load(path: Path):
    from monai.transforms import LoadImaged

    return LoadImaged("image", reader=image_readers(), ensure_channel_first=True, image_only=True)(
        {"image": str(path)}
    )["image"]


def test_raster_files_load_rows_first(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    for suffix in (".png", ".tif", ".gif", ".jpg", ".bmp"):
        path = tmp_path / f"x{suffix}"
        (Image.fromarray(rgb[..., 0]) if suffix == ".gif" else Image.fromarray(rgb)).save(path)
        x = _load(path)
        assert is_row_major(path)
        assert tuple(x.shape[1:]) == (5, 7), suffix  # (C, H, W), DRIVE's convention
        if suffix in (".png", ".tif", ".bmp"):  # lossless
            np.testing.assert_array_equal(x.numpy(), np.moveaxis(rgb, -1, 0))


def test_colour_and_grey_dicom_load_in_monai_order_with_their_geometry(tmp_path: Path) -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    x = _load(write_dicom(tmp_path / "rgb.dcm", rgb))
    assert not is_row_major(tmp_path / "rgb.dcm")
    # colour is the channel axis (MONAI's PydicomReader alone gives (1, 9, 6, 3)); (x, y) = (column, row)
    np.testing.assert_array_equal(x.numpy(), np.moveaxis(rgb, -1, 0).transpose(0, 2, 1))
    # PixelSpacing is (row, column) spacing; LPS -> RAS flips x and y
    np.testing.assert_allclose(np.diag(x.affine.numpy())[:3], [-0.25, -0.5, 1.0])
    np.testing.assert_allclose(x.affine.numpy()[:3, 3], [-5.0, -6.0, 7.0])
    grey = _load(write_dicom(tmp_path / "grey.dcm", rgb[..., 1]))
    np.testing.assert_array_equal(grey.numpy(), rgb[None, ..., 1].transpose(0, 2, 1))


def test_nifti_loads_in_voxel_order_with_its_affine(tmp_path: Path) -> None:
    data = np.random.default_rng(2).random((8, 5)).astype(np.float32)
    affine = np.diag([0.5, 0.7, 1.0, 1.0])
    affine[:3, 3] = [1.0, 2.0, 3.0]
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "x.nii.gz")
    x = _load(tmp_path / "x.nii.gz")
    np.testing.assert_array_equal(x.numpy()[0], data)
    np.testing.assert_allclose(x.affine.numpy(), affine, atol=1e-6)


def test_no_gpu_codec_noise_when_loading(tmp_path: Path) -> None:
    """A process that loads a DICOM the bundles' way prints nothing about MONAI's GPU DICOM codec (absent here)."""
    import subprocess
    import sys

    path = write_dicom(tmp_path / "grey.dcm", np.zeros((4, 4), np.uint8))
    code = (
        "from monai.transforms import LoadImaged; from monai_cnf.data import image_readers; "
        "load = LoadImaged('image', reader=image_readers(), image_only=True); "
        f"print(load({{'image': {str(path)!r}}})['image'].shape)"
    )
    out = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "nvImageCodec" not in out.stdout + out.stderr, out.stderr


def _sample(bundle: Path, image: Path, out: Path) -> None:
    args = ["sample", str(bundle), "--input", str(image), "--output", str(out), "--num-samples", "2", "--seed", "0"]
    result = CliRunner().invoke(app, [*args, "--device", "cpu"], terminal_width=250)
    assert result.exit_code == 0, result.output


def test_drive_bundle_samples_a_colour_dicom_and_writes_its_affine(tmp_path: Path) -> None:
    rgb = np.random.default_rng(3).integers(0, 256, (22, 30, 3), dtype=np.uint8)  # not divisible by 4
    dicom = write_dicom(tmp_path / "fundus.dcm", rgb)
    _sample(DRIVE, dicom, tmp_path / "out")
    mean = nib.load(tmp_path / "out" / "mean.nii.gz")
    samples = nib.load(tmp_path / "out" / "samples.nii.gz")
    assert mean.shape == (30, 22) and samples.shape == (30, 22, 2)  # the DICOM's (x, y) grid, padding undone
    np.testing.assert_allclose(mean.affine, _load(dicom).affine.numpy(), atol=1e-6)
    assert set(np.unique(np.asarray(samples.dataobj))) <= {0, 1}
    png = np.asarray(Image.open(tmp_path / "out" / "sample_001.png"))
    assert png.shape == (22, 30)  # PNGs are (row, column), as the DICOM is displayed
    np.testing.assert_array_equal(png, np.asarray(samples.dataobj)[..., 1].T * 255)


def test_sr_bundle_samples_a_nifti_and_writes_the_fine_grids_affine(tmp_path: Path) -> None:
    affine = np.diag([0.5, 0.7, 1.0, 1.0])
    affine[:3, 3] = [1.0, 2.0, 3.0]
    grey = np.random.default_rng(4).integers(0, 256, (21, 17)).astype(np.uint8)  # odd sizes: the flow pads
    nib.save(nib.Nifti1Image(grey, affine), tmp_path / "lr.nii.gz")
    _sample(SR, tmp_path / "lr.nii.gz", tmp_path / "out")
    mean = nib.load(tmp_path / "out" / "mean.nii.gz")
    assert mean.shape == (42, 34, 3)  # 2x grid, RGB (ToRGBd) last
    # HR voxel i sits at LR voxel (i + 0.5) / 2 - 0.5: half the spacing, origin moved by a quarter LR voxel
    expected = affine @ np.array([[0.5, 0, 0, -0.25], [0, 0.5, 0, -0.25], [0, 0, 1, 0], [0, 0, 0, 1]])
    np.testing.assert_allclose(mean.affine, expected, atol=1e-6)
    hr_centre = mean.affine @ np.array([1.0, 1.0, 0.0, 1.0])  # HR voxel 1 lies at LR voxel coordinate 0.25
    np.testing.assert_allclose(hr_centre[:2], (affine @ np.array([0.25, 0.25, 0.0, 1.0]))[:2], atol=1e-6)


def test_a_grey_image_for_the_colour_bundle_names_the_channels(tmp_path: Path) -> None:
    dicom = write_dicom(tmp_path / "grey.dcm", np.zeros((8, 8), np.uint8))
    args = ["sample", str(DRIVE), "--input", str(dicom), "--output", str(tmp_path / "o"), "--device", "cpu"]
    result = CliRunner().invoke(app, args, terminal_width=250)
    assert result.exit_code != 0
    assert "has 1 channel(s) but bundle drive_vessel expects 3" in result.stderr


def test_png_outputs_follow_the_order_the_bundles_loader_gives() -> None:
    """``cnf sample`` transposes its PNGs only for images loaded in MONAI's (x, y) order."""
    from monai.transforms import Compose, LoadImaged

    from monai_cnf.bundle.sample import _row_major

    monai_default = Compose([LoadImaged("image", image_only=True)])  # PILReader(reverse_indexing=True): (x, y)
    bundles = Compose([LoadImaged("image", reader=image_readers(), image_only=True)])
    assert not _row_major(monai_default, Path("x.png"))
    assert _row_major(bundles, Path("x.png")) and _row_major(bundles, Path("x.TIF"))
    assert not _row_major(bundles, Path("x.nii.gz")) and not _row_major(bundles, Path("x.dcm"))
