"""Super-resolution data: (HR, bicubic LR) pairs from image folders, scikit-image's images, ImageNet32/64.

Conventions (fixed across the project): the HR target ``y`` is a float tensor of integer values in
[0, 255], ``(3, H, W)``; the LR condition ``x`` is MATLAB-bicubic downscaled (antialiased, ``scale``),
rounded to 8 bits like MATLAB's ``imresize`` on ``uint8`` and scaled to [0, 1]. By default the HR image is
stored under ``"label"`` and the LR image under ``"image"``, as in segmentation (``image`` = what the model
is conditioned on, ``label`` = what it models), so the same trainer / inferer code serves both bundles.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "SKIMAGE_SR_IMAGES",
    "ImageNetDownsampledDataset",
    "skimage_datalist",
    "sr_datalist",
    "sr_pair_dataset",
    "sr_pair_transforms",
]

logger = logging.getLogger(__name__)

_SR_EXTS = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".ppm", ".webp")

#: RGB natural photographs that scikit-image ships inside its wheel (no download), name -> file in skimage/data.
SKIMAGE_SR_IMAGES: dict[str, str] = {
    "astronaut": "astronaut.png",  # 512x512
    "chelsea": "chelsea.png",  # 451x300
    "coffee": "coffee.png",  # 600x400
    "rocket": "rocket.jpg",  # 640x427
    "motorcycle_left": "motorcycle_left.png",  # 741x500 (stereo pair, left view)
    "hubble_deep_field": "hubble_deep_field.jpg",  # 1000x872
    "immunohistochemistry": "ihc.png",  # 512x512
}


def skimage_datalist(names: Sequence[str] | None = None, key: str = "label") -> list[dict[str, str]]:
    """Datalist of the RGB photographs shipped with scikit-image (the SR bundle's default data, offline).

    Args:
        names: keys of :data:`SKIMAGE_SR_IMAGES`; None takes all of them. Defaults to None.
        key: the datalist key of the (HR) file. Defaults to "label".

    Returns:
        ``[{key: path}, ...]`` in the order of ``names``.

    Raises:
        ValueError: an unknown name. FileNotFoundError: the installed scikit-image lacks a file.

    Example:
        >>> [Path(d["label"]).name for d in skimage_datalist(["astronaut", "coffee"])]
        ['astronaut.png', 'coffee.png']
    """
    import skimage.data

    data_dir = Path(skimage.data.__file__).parent
    chosen = list(SKIMAGE_SR_IMAGES) if names is None else list(names)
    unknown = [n for n in chosen if n not in SKIMAGE_SR_IMAGES]
    if unknown:
        raise ValueError(f"unknown scikit-image image(s) {unknown}; choose from {sorted(SKIMAGE_SR_IMAGES)}.")
    paths = [data_dir / SKIMAGE_SR_IMAGES[n] for n in chosen]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"scikit-image does not ship {missing} in this version; use other names.")
    return [{key: str(p)} for p in paths]


def sr_datalist(folder: str | Path, key: str = "label", recursive: bool = False) -> list[dict[str, str]]:
    """Datalist of the high-resolution images in ``folder`` (Set5/Set14/BSD100/T91/... or your own).

    An ``HR`` sub-folder is used when present (common benchmark packaging); files or folders marked as
    low-resolution (``LR`` folders, ``*_LR*`` names) are skipped, so ``img_001_SRF_2_HR.png`` and
    ``baby.png`` layouts both work.

    Args:
        folder: the folder of images.
        key: the datalist key of each file. Defaults to "label" (the HR target).
        recursive: also search sub-folders. Defaults to False.

    Returns:
        ``[{key: path}, ...]`` sorted by path.

    Raises:
        FileNotFoundError: the folder does not exist or holds no image.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> d = Path(tempfile.mkdtemp()); Image.new("RGB", (8, 6)).save(d / "a.png")
        >>> [Path(x["label"]).name for x in sr_datalist(d)]
        ['a.png']
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"SR image folder {str(root)!r} does not exist.")
    hr = [p for p in root.iterdir() if p.is_dir() and p.name.lower() == "hr"]
    base = hr[0] if hr else root
    it = base.rglob("*") if recursive else base.iterdir()
    files = []
    for p in it:
        if not p.is_file() or p.suffix.lower() not in _SR_EXTS:
            continue
        rel = p.relative_to(base)
        if any(part.lower().startswith("lr") for part in rel.parts[:-1]) or "_lr" in p.stem.lower():
            continue
        files.append(p)
    if not files:
        raise FileNotFoundError(
            f"no images ({', '.join(_SR_EXTS)}) in {str(base)!r}"
            + ("" if recursive else " (pass recursive=True to search sub-folders)")
            + "."
        )
    return [{key: str(p.resolve())} for p in sorted(files)]


def sr_pair_transforms(
    hr_key: str = "label",
    lr_key: str = "image",
    scale: int = 2,
    patch_size: int | Sequence[int] | None = None,
    quantize: bool = True,
) -> list[Any]:
    """MONAI transforms turning a file path under ``hr_key`` into an (HR, bicubic LR) pair.

    ``LoadImaged`` (:func:`~monai_cnf.data.image_readers`: raster files row-major ``(C, H, W)``) -> ``ToRGBd`` ->
    ``DivisibleCropd(k=scale)`` (modcrop) ->
    optional ``RandSpatialCropd(patch_size)`` -> ``BicubicDownsampled`` (MATLAB bicubic, antialiased, rounded to
    8 bits when ``quantize``, divided by 255). The HR stays integer-valued float in [0, 255].

    Args:
        hr_key: key of the file path, then of the HR image. Defaults to "label".
        lr_key: key written with the LR image in [0, 1]. Defaults to "image".
        scale: downscaling factor. Defaults to 2.
        patch_size: random HR crop size (a multiple of ``scale``); None keeps whole images. Defaults to None.
        quantize: round the LR to 8-bit levels before scaling (as benchmark LR files are). Defaults to True.

    Returns:
        the list of transforms (wrap in ``monai.transforms.Compose``).

    Example:
        >>> [type(t).__name__ for t in sr_pair_transforms(patch_size=64)]
        ['LoadImaged', 'ToRGBd', 'DivisibleCropd', 'RandSpatialCropd', 'BicubicDownsampled']
    """
    from monai.transforms import LoadImaged, RandSpatialCropd

    from monai_cnf.data.readers import image_readers
    from monai_cnf.transforms import BicubicDownsampled, DivisibleCropd, ToRGBd

    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer for (HR, LR) pairs, got {scale}.")
    scale = int(scale)
    out: list[Any] = [
        LoadImaged(hr_key, reader=image_readers(), ensure_channel_first=True, image_only=True),
        ToRGBd(hr_key),
        DivisibleCropd(hr_key, k=scale),
    ]
    if patch_size is not None:
        sizes = [int(s) for s in np.atleast_1d(patch_size)]
        if any(s % scale for s in sizes):
            raise ValueError(f"patch_size must be a multiple of scale={scale}, got {patch_size}.")
        out.append(RandSpatialCropd(hr_key, roi_size=sizes if len(sizes) > 1 else sizes[0], random_size=False))
    out.append(BicubicDownsampled(hr_key, lr_key=lr_key, scale=scale, quantize=quantize, divisor=255.0))
    return out


def sr_pair_dataset(
    data: str | Path | Sequence[dict[str, str]] | None = None,
    scale: int = 2,
    patch_size: int | Sequence[int] | None = None,
    hr_key: str = "label",
    lr_key: str = "image",
    quantize: bool = True,
):
    """A ``monai.data.Dataset`` of (HR, LR) pairs from a folder, a datalist, or (None) scikit-image's photos.

    Args:
        data: a folder (see :func:`sr_datalist`), a datalist with ``hr_key`` paths, or None for
            :func:`skimage_datalist`. Defaults to None.
        scale: downscaling factor. Defaults to 2.
        patch_size: random HR crop size, a multiple of ``scale``; None keeps whole images. Defaults to None.
        hr_key: HR key. Defaults to "label".
        lr_key: LR key. Defaults to "image".
        quantize: round the LR to 8-bit levels. Defaults to True.

    Example:
        >>> ds = sr_pair_dataset(None, scale=2, patch_size=32)
        >>> item = ds[0]; tuple(item["label"].shape), tuple(item["image"].shape)
        ((3, 32, 32), (3, 16, 16))
    """
    from monai.data import Dataset
    from monai.transforms import Compose

    if data is None:
        datalist = skimage_datalist(key=hr_key)
    elif isinstance(data, (str, Path)):
        datalist = sr_datalist(data, key=hr_key)
    else:
        datalist = list(data)
    return Dataset(datalist, Compose(sr_pair_transforms(hr_key, lr_key, scale, patch_size, quantize)))


class ImageNetDownsampledDataset:
    """Downsampled ImageNet (Chrabaszcz et al., 2017) from its ``.npz`` batches, as HR images in [0, 255].

    Each file holds ``data``: ``(N, 3 * R * R)`` uint8, every row one image in row-major ``(C, H, W)`` order,
    and ``labels``: ``(N,)`` classes 1..1000 (the training batches also hold ``mean``, unused).
    Items are ``{hr_key: float32 tensor (3, R, R) of integer values 0..255, "class": int}``, passed through
    ``transform`` (e.g. ``BicubicDownsampled(hr_key, lr_key="image", quantize=True, divisor=255.0)`` for SR
    pairs). All files are loaded into memory as uint8 (ImageNet32 train: ~3.7 GiB, ImageNet64: ~14.7 GiB; pass
    a subset of the batch files to use less).

    Args:
        paths: one ``.npz`` file or a folder of them, or a sequence of files.
        resolution: 32 or 64 (or another R); None infers it from the files. Defaults to None.
        transform: applied to each item (a MONAI transform or any callable). Defaults to None.
        hr_key: key of the image. Defaults to "label" (the SR target).

    Raises:
        FileNotFoundError: missing files. ValueError: a file without ``data``/``labels`` or the wrong resolution.

    Example:
        >>> import tempfile
        >>> f = Path(tempfile.mkdtemp()) / "val_data.npz"
        >>> np.savez(f, data=np.zeros((2, 3 * 8 * 8), np.uint8), labels=np.array([1, 2]))
        >>> ds = ImageNetDownsampledDataset(f, resolution=8)
        >>> len(ds), tuple(ds[1]["label"].shape), ds[1]["class"]
        (2, (3, 8, 8), 2)
    """

    def __init__(
        self,
        paths: str | Path | Sequence[str | Path],
        resolution: int | None = None,
        transform: Callable[[dict[str, Any]], Any] | None = None,
        hr_key: str = "label",
    ) -> None:
        if isinstance(paths, (str, Path)):
            p = Path(paths).expanduser()
            files = sorted(p.glob("*.npz")) if p.is_dir() else [p]
        else:
            files = [Path(f).expanduser() for f in paths]
        missing = [str(f) for f in files if not f.is_file()]
        if not files or missing:
            raise FileNotFoundError(
                f"ImageNet32/64 .npz batch file(s) not found: {missing or [str(paths)]} "
                "(expected e.g. train_data_batch_1.npz ... or val_data.npz from the downsampled ImageNet release)."
            )
        data, labels = [], []
        for f in files:
            with np.load(f, allow_pickle=False) as z:
                if "data" not in z or "labels" not in z:
                    raise ValueError(f"{str(f)!r} has arrays {list(z.keys())}; expected 'data' and 'labels'.")
                x = np.asarray(z["data"])
                y = np.asarray(z["labels"]).reshape(-1)
            if x.ndim != 2 or x.dtype != np.uint8 or len(x) != len(y):
                raise ValueError(
                    f"{str(f)!r}: 'data' must be uint8 (N, 3*R*R) with one label per row, got {x.dtype} {x.shape} "
                    f"and {len(y)} labels."
                )
            r = math.isqrt(x.shape[1] // 3)
            if 3 * r * r != x.shape[1] or (resolution is not None and r != int(resolution)):
                raise ValueError(
                    f"{str(f)!r}: rows of {x.shape[1]} values are not 3x{resolution}x{resolution} images "
                    f"(3*32*32 = 3072 for ImageNet32, 3*64*64 = 12288 for ImageNet64)."
                )
            if resolution is None:
                resolution = r
            data.append(x)
            labels.append(y)
        self.resolution = int(resolution)  # type: ignore[arg-type]
        self.data = np.concatenate(data) if len(data) > 1 else data[0]
        self.labels = np.concatenate(labels) if len(labels) > 1 else labels[0]
        self.transform = transform
        self.hr_key = hr_key
        self.files = [str(f) for f in files]
        logger.info("ImageNet%d: %d images from %d file(s)", self.resolution, len(self.data), len(files))

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> Any:
        import torch

        r = self.resolution
        img = torch.from_numpy(self.data[index].reshape(3, r, r).astype(np.float32))
        item: dict[str, Any] = {self.hr_key: img, "class": int(self.labels[index])}
        if self.transform is None:
            return item
        from monai.transforms import apply_transform

        return apply_transform(self.transform, item)
