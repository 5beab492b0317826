"""``cnf sample``: N samples of p(y | x) for an image (or a folder of them), written as PNG and NIfTI.

The bundle's ``network_def``, ``preprocessing`` and ``inferer`` (a ``SampleInferer``) are used as they are; the
padding its preprocessing applied is undone with MONAI's ``Invertd`` before anything is written.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from monai_cnf.bundle.files import Bundle, BundleError, load_bundle

__all__ = ["SampleResult", "input_images", "output_names", "run_sampling", "to_png_array", "write_outputs"]

logger = logging.getLogger(__name__)


@dataclass
class SampleResult:
    """Files written by ``cnf sample`` with their array shapes."""

    output: Path
    checkpoint: Path
    files: dict[str, tuple[int, ...]] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)


def output_names(num_samples: int) -> list[str]:
    """Every file ``cnf sample`` writes for ``num_samples`` samples.

    >>> output_names(2)
    ['sample_000.png', 'sample_001.png', 'mean.png', 'std.png', 'samples.nii.gz', 'mean.nii.gz', 'std.nii.gz']
    """
    pngs = [f"sample_{i:03d}.png" for i in range(num_samples)]
    return [*pngs, "mean.png", "std.png", "samples.nii.gz", "mean.nii.gz", "std.nii.gz"]


def to_png_array(arr: np.ndarray, lo: float, hi: float, transpose: bool) -> np.ndarray:
    """A ``(C, *spatial)`` 2D map -> uint8 ``(H, W)`` or ``(H, W, 3)`` with ``[lo, hi]`` mapped to ``[0, 255]``.

    Args:
        arr: ``(C, X, Y)`` with C 1 or 3.
        lo: value shown black.
        hi: value shown white.
        transpose: the array is in MONAI's ``(x, y)`` = ``(W, H)`` order (``LoadImage`` of a 2D file).

    >>> to_png_array(np.array([[[0.0, 1.0]]]), 0.0, 1.0, transpose=False)
    array([[  0, 255]], dtype=uint8)
    """
    if arr.ndim != 3:
        raise ValueError(f"PNG output needs a 2D map (C, X, Y), got shape {arr.shape}.")
    scaled = np.clip(np.round((arr.astype(np.float64) - lo) / max(hi - lo, 1e-12) * 255.0), 0, 255).astype(np.uint8)
    if transpose:
        scaled = np.swapaxes(scaled, 1, 2)
    return scaled[0] if scaled.shape[0] == 1 else np.moveaxis(scaled[:3], 0, -1)


def _nifti(arr: np.ndarray, affine: np.ndarray, path: Path) -> tuple[int, ...]:
    import nibabel as nib

    img = nib.Nifti1Image(arr, affine)
    nib.save(img, str(path))
    return tuple(arr.shape)


def _channel_last(arr: np.ndarray) -> np.ndarray:
    """``(C, *spatial)`` -> ``(*spatial)`` for C == 1, else ``(*spatial, C)``."""
    return arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)


def write_outputs(
    output: Path,
    samples: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    value_range: Sequence[float],
    affine: np.ndarray | None = None,
    transpose: bool = True,
) -> dict[str, tuple[int, ...]]:
    """Write samples, mean and std as PNG (2D only) and NIfTI; returns file name -> written array shape.

    PNG: values in ``value_range`` map to 0..255, the std map's ``[0, (hi - lo) / 2]`` (the largest possible std of
    a variable in ``[lo, hi]``) to 0..255. NIfTI keeps the values: ``samples.nii.gz`` is ``(*spatial, S)`` (C == 1)
    or ``(*spatial, C, S)``, ``mean``/``std`` are ``(*spatial)`` or ``(*spatial, C)``, in MONAI's axis order.

    Args:
        output: folder (created).
        samples: ``(S, C, *spatial)``.
        mean: ``(C, *spatial)``.
        std: ``(C, *spatial)``.
        value_range: ``(lo, hi)`` of the predicted variable (metadata ``outputs.pred.value_range``).
        affine: 4x4 affine of the input image. Defaults to identity.
        transpose: arrays are in MONAI's ``(x, y)`` order; PNGs are written ``(row, column)``. Defaults to True.
    """
    lo, hi = float(value_range[0]), float(value_range[1])
    affine = np.eye(4) if affine is None else affine
    output.mkdir(parents=True, exist_ok=True)
    files: dict[str, tuple[int, ...]] = {}
    if mean.ndim == 3:  # 2D maps: PNGs
        from PIL import Image

        for i, s in enumerate(samples):
            png = to_png_array(s, lo, hi, transpose)
            Image.fromarray(png).save(output / f"sample_{i:03d}.png")
            files[f"sample_{i:03d}.png"] = png.shape
        for name, arr, top in (("mean", mean, hi), ("std", std, lo + (hi - lo) / 2)):
            png = to_png_array(arr if name == "mean" else arr + lo, lo, top, transpose)
            Image.fromarray(png).save(output / f"{name}.png")
            files[f"{name}.png"] = png.shape
    stacked = np.moveaxis(samples, 0, -1)  # (C, *spatial, S)
    stacked = stacked[0] if stacked.shape[0] == 1 else np.moveaxis(stacked, 0, -2)
    int_like = bool(np.all(samples == np.round(samples))) and samples.min() >= 0 and samples.max() <= 255
    files["samples.nii.gz"] = _nifti(
        stacked.astype(np.uint8 if int_like else np.float32), affine, output / "samples.nii.gz"
    )
    files["mean.nii.gz"] = _nifti(_channel_last(mean).astype(np.float32), affine, output / "mean.nii.gz")
    files["std.nii.gz"] = _nifti(_channel_last(std).astype(np.float32), affine, output / "std.nii.gz")
    return files


def _raw_channels(path: Path) -> int | None:
    """Channels of an image file as MONAI loads it (None when MONAI cannot read it)."""
    try:
        from monai.transforms import LoadImage

        return int(LoadImage(image_only=True, ensure_channel_first=True)(str(path)).shape[0])
    except Exception:  # unreadable here: the bundle's own preprocessing error is reported instead
        return None


def _channel_error(path: Path, got: int, bundle: Bundle) -> BundleError:
    image = bundle.io("inputs", "image")
    what = image.get("channel_def") or image.get("format") or ""
    return BundleError(
        f"input {path} has {got} channel(s) but bundle {bundle.name} expects {image.get('num_channels')} "
        f"(configs/metadata.json network_data_format.inputs.image.num_channels; {what})."
    )


#: Image files ``run_sampling`` takes from a folder (what :func:`monai_cnf.data.image_readers` reads).
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".gif", ".bmp", ".nii", ".gz", ".dcm")


def input_images(path: Path) -> list[Path]:
    """``path`` itself, or the image files of a folder (sorted); a :class:`BundleError` for an empty folder."""
    path = Path(path)
    if not path.is_dir():
        if not path.is_file():
            raise BundleError(f"input {path} does not exist.")
        return [path]
    found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise BundleError(f"input folder {path} holds no image ({', '.join(IMAGE_SUFFIXES)}).")
    return found


def run_sampling(
    bundle_path: Path,
    *,
    input_path: Path,
    output: Path,
    checkpoint: Path | None = None,
    run_dir: Path | None = None,
    num_samples: int | None = None,
    temperature: float | None = None,
    seed: int | None = None,
    device: str | None = None,
    overrides: Sequence[str] = (),
    overwrite: bool = False,
    preset: str | None = None,
    progress: bool = True,
) -> SampleResult:
    """Draw samples for an image (or every image of a folder) and write them, their mean and std (PNG + NIfTI).

    ``num_samples`` and ``temperature`` default to the bundle's (``inference.json``'s ``num_samples`` and
    ``temperature``); the result's ``info`` says which were used and where they came from. The network and weights
    come from :func:`~monai_cnf.bundle.load_trained`. A folder of images writes ``output/<image stem>/``. Rich
    progress bars on stderr follow the samples of each image and count the images of a folder (``progress=False``:
    none).
    """
    import torch

    from monai_cnf.bundle.loading import load_trained, resolve_device

    bundle = load_bundle(bundle_path)
    if num_samples is not None and num_samples < 1:
        raise BundleError(f"`num_samples` must be >= 1, got {num_samples}.")
    if temperature is not None and temperature < 0:
        raise BundleError(f"`temperature` must be >= 0, got {temperature}.")
    images = input_images(Path(input_path))
    output = Path(output).absolute()
    folders = [output] if len(images) == 1 and not Path(input_path).is_dir() else [output / p.stem for p in images]
    device = resolve_device(device)
    trained = load_trained(bundle, run_dir, checkpoint, preset, device=device, overrides=overrides)
    parser = trained.parser
    n = int(num_samples if num_samples is not None else parser.get_parsed_content("num_samples"))
    tau = float(temperature if temperature is not None else parser.get_parsed_content("temperature"))
    clash = [f / name for f in folders for name in output_names(n) if (f / name).exists()]
    if clash and not overwrite:
        raise BundleError(
            f"{clash[0].parent} already holds {', '.join(p.name for p in clash[:3])}{' ...' if len(clash) > 3 else ''};"
            " choose another `output` or allow `overwrite` (nothing was written)."
        )
    inferer = parser.get_parsed_content("inferer")
    inferer.num_samples, inferer.temperature = n, tau
    inferer.return_std = inferer.return_samples = True
    if trained.provenance.run_dir is not None:  # sample as the run validated: its sliding windows
        _use_trained_windows(inferer, trained.provenance.network_configs[0])
    preprocessing = parser.get_parsed_content("preprocessing")
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    result = SampleResult(output, trained.provenance.checkpoint)
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    columns += (TextColumn("{task.fields[name]}"),)
    with Progress(*columns, console=Console(stderr=True), disable=not progress, transient=True) as bar:
        # one bar for the images of a folder, one for the samples of the image being drawn
        images_task = bar.add_task("images", total=len(images), name="", visible=len(images) > 1)
        samples_task = bar.add_task(f"{n} samples", total=1.0, name="")
        inferer.progress = lambda fraction: bar.update(samples_task, completed=fraction)
        for image, folder in zip(images, folders, strict=True):
            bar.reset(samples_task, total=1.0, name=image.name)
            if seed is not None:
                torch.manual_seed(seed)
                inferer.generator = torch.Generator(device=device).manual_seed(seed)
            written = _sample_one(bundle, parser, preprocessing, inferer, trained.network, image, folder, device)
            prefix = "" if folder == output else f"{folder.name}/"
            result.files.update({prefix + k: v for k, v in written.items()})
            bar.advance(images_task)
        inferer.progress = None

    def origin(value: Any) -> str:
        return "given" if value is not None else "bundle"

    result.info.update(
        {
            "input": f"{input_path}" + (f" ({len(images)} images)" if Path(input_path).is_dir() else ""),
            **trained.provenance.describe(),
            "samples / temperature": f"{n} ({origin(num_samples)}) / {tau:g} ({origin(temperature)})",
            "windows": _describe_roi(getattr(inferer, "roi_size", None)),
            "seed": "random" if seed is None else str(seed),
            "device": device,
        }
    )
    return result


def _sample_one(
    bundle: Bundle, parser: Any, preprocessing: Any, inferer: Any, network: Any, image: Path, output: Path, device: str
) -> dict[str, tuple[int, ...]]:
    """Preprocess one image as the bundle does, sample it, undo the geometry, write the files."""
    expected = bundle.io("inputs", "image").get("num_channels")
    try:
        data = preprocessing({"image": str(Path(image).absolute())})
    except Exception as err:
        raw = _raw_channels(image)
        if expected is not None and raw is not None and raw != int(expected):
            raise _channel_error(image, raw, bundle) from None
        raise BundleError(f"cannot preprocess {image} with the bundle's preprocessing: {err}") from err
    x = data["image"]
    if expected is not None and int(x.shape[0]) != int(expected):
        raise _channel_error(image, int(x.shape[0]), bundle)
    out = inferer(x.unsqueeze(0).to(device), network)
    samples, mean, std = out["samples"][:, 0], out["pred"][0], out["std"][0]
    samples, mean, std = _restore_geometry(parser, preprocessing, data, [samples.flatten(0, 1), mean, std])
    samples = samples.reshape(inferer.num_samples, -1, *samples.shape[1:])
    vr = bundle.io("outputs", "pred").get("value_range") or [0, 1]
    loaded_shape = (getattr(x, "meta", {}) or {}).get("spatial_shape", x.shape[1:])
    affine = _output_affine(_affine(x), np.asarray(loaded_shape).tolist(), mean.shape[1:])
    return write_outputs(output, samples, mean, std, vr, affine, transpose=not _row_major(preprocessing, image))


def _use_trained_windows(inferer: Any, config: Path) -> None:
    """Give ``inferer`` the sliding windows of a run's resolved training config (a config written before
    ``roi_size`` existed leaves the bundle's inference settings in place)."""
    from monai.bundle import ConfigParser

    from monai_cnf.engines import sliding_window_settings

    trained = ConfigParser()
    trained.read_config(str(config))
    if "roi_size" in trained:
        for attr, value in sliding_window_settings(trained).items():
            setattr(inferer, attr, value)


def _describe_roi(roi_size: Any) -> str:
    """``"96 x 96 sliding windows"`` or ``"whole image"``."""
    if roi_size is None:
        return "whole image"
    sizes = [roi_size] if isinstance(roi_size, int) else list(roi_size)
    return " x ".join(str(v) for v in sizes) + " sliding windows"


#: Postprocessing steps that restore the input's geometry (the rest, thresholds and savers, are not wanted here).
GEOMETRY_STEPS = ("Invertd", "CropToScaledInputd")


def _restore_geometry(parser: Any, preprocessing: Any, data: Mapping[str, Any], tensors: list[Any]) -> list[np.ndarray]:
    """Apply the geometry steps of the bundle's ``postprocessing`` (``Invertd`` for DRIVE's padding,
    ``CropToScaledInputd`` for SR's 2x grid) to each ``(C, *spatial)`` map; without such steps, invert the
    preprocessing with MONAI's ``Invertd`` when the output lies on the input's grid."""
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Invertd

    x = data["image"]
    steps = []
    if "postprocessing" in parser:
        post = parser.get_parsed_content("postprocessing")
        steps = [t for t in getattr(post, "transforms", ()) if type(t).__name__ in GEOMETRY_STEPS]
    out = []
    for t in tensors:
        t = t.detach().cpu().float()
        t = t.as_tensor() if hasattr(t, "as_tensor") else t
        if steps:
            d: dict[str, Any] = {"pred": MetaTensor(t), "image": x}
            for step in steps:
                d = step(d)
            t = d["pred"]
        elif isinstance(x, MetaTensor) and x.applied_operations and tuple(t.shape[1:]) == tuple(x.shape[1:]):
            inv = Invertd(keys="pred", transform=preprocessing, orig_keys="image", nearest_interp=False)
            t = inv({"pred": MetaTensor(t), "image": x})["pred"]
        t = t.as_tensor() if hasattr(t, "as_tensor") else torch.as_tensor(t)
        out.append(t.numpy())
    return out


def _row_major(preprocessing: Any, image: Path) -> bool:
    """Whether the bundle's ``LoadImage(d)`` gives ``image`` in row-major ``(C, H, W)`` order (then the PNGs are
    written as they are) rather than MONAI's ``(x, y)`` order (then they are transposed).

    NIfTI and DICOM are always read in voxel order. A raster file is read by the first ``PILReader`` the loader
    tries (MONAI tries its readers last to first): row-major with ``reverse_indexing=False`` (the bundles'
    :func:`monai_cnf.data.image_readers`), ``(x, y)`` with MONAI's default.
    """
    from monai_cnf.data.readers import is_row_major

    if not is_row_major(image):
        return False
    for t in getattr(preprocessing, "transforms", ()):
        loader = getattr(t, "_loader", t)
        if type(loader).__name__ == "LoadImage":
            for reader in reversed(getattr(loader, "readers", [])):
                if type(reader).__name__ == "PILReader":
                    return not bool(getattr(reader, "reverse_indexing", True))
    return False


def _affine(x: Any) -> np.ndarray:
    """The 4x4 affine of the image as it was loaded (``original_affine``: padding by the preprocessing does not
    move it), else of ``x``, else the identity."""
    meta = getattr(x, "meta", {}) or {}
    affine = meta.get("original_affine", getattr(x, "affine", None))
    if affine is None:
        return np.eye(4)
    a = np.asarray(affine, dtype=np.float64)
    if a.shape == (4, 4):
        return a
    full = np.eye(4)
    n = a.shape[0] - 1
    full[:n, :n], full[:n, 3] = a[:n, :n], a[:n, n]
    return full


def _output_affine(affine: np.ndarray, in_shape: Sequence[int], out_shape: Sequence[int]) -> np.ndarray:
    """The input's affine for an output on its grid; for an output on an ``s``-times finer grid (super-resolution),
    the affine of that grid: voxels ``s`` times smaller, with voxel centres where a ``s x s`` block of the output
    covers one input voxel (output index ``i`` sits at input index ``(i + 0.5) / s - 0.5``).

    >>> _output_affine(np.eye(4), (2, 2), (4, 4))[:2].tolist()
    [[0.5, 0.0, 0.0, -0.25], [0.0, 0.5, 0.0, -0.25]]
    """
    in_shape, out_shape = [int(v) for v in in_shape], [int(v) for v in out_shape]
    if in_shape == out_shape or len(in_shape) != len(out_shape) or len(in_shape) > 3:
        return affine
    if any(o % i for i, o in zip(in_shape, out_shape, strict=True)):
        return affine
    scale = np.ones(3)
    for d, (i, o) in enumerate(zip(in_shape, out_shape, strict=True)):
        scale[d] = i / o
    grid = np.eye(4)
    grid[:3, :3] = np.diag(scale)
    grid[:3, 3] = (scale - 1.0) / 2.0
    return affine @ grid
