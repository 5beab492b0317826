"""DRIVE datalists and the MONAI loading recipe for its files.

DRIVE's official layout (also what :func:`monai_cnf.data.make_synthetic_drive` writes)::

    training/images/21_training.tif       training/1st_manual/21_manual1.gif   training/mask/21_training_mask.gif
    test/images/01_test.tif               test/1st_manual/01_manual1.gif       test/mask/01_test_mask.gif
                                          test/2nd_manual/01_manual2.gif

Loading (what :func:`drive_load_transforms` returns, and what a bundle writes in JSON)::

    {"_target_": "LoadImaged", "keys": ["image", "label", "mask"], "reader": "$monai_cnf.data.image_readers()",
     "ensure_channel_first": true, "image_only": true}
    {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": 0, "a_max": 255, "b_min": 0.0, "b_max": 1.0,
     "clip": true}
    {"_target_": "monai_cnf.transforms.BinarizeLabeld", "keys": ["label", "mask"]}

:func:`~monai_cnf.data.image_readers` reads DRIVE's ``.tif``/``.gif`` files with MONAI's ``PILReader``
(``reverse_indexing=False``), which keeps the files' row-major order: every key comes out ``(C, H, W) = (C, 584, 565)``,
the same as ``numpy.asarray(PIL.Image.open(path))`` moved channel-first, so image, labels and mask align and a
prediction ``pred[0]`` saves back with ``PIL.Image.fromarray`` in the original orientation. (MONAI's PILReader
default, ``reverse_indexing=True``, gives ``(C, 565, 584)``: consistent too, but transposed.) The 1st observer
and the masks store 255, the 2nd observer's palette GIFs store 1: ``BinarizeLabeld`` (> 0) maps both to {0., 1.}.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["DRIVE_SPLITS", "drive_datalist", "drive_load_transforms", "find_drive_root"]

DRIVE_SPLITS = {"training": "training", "train": "training", "test": "test"}
_IMAGE_EXTS = (".tif", ".tiff", ".png", ".gif", ".jpg", ".jpeg", ".bmp")
_LAYOUT = (
    "expected DRIVE's layout: <root>/training/{images/21_training.tif, 1st_manual/21_manual1.gif, "
    "mask/21_training_mask.gif} and <root>/test/{images/01_test.tif, 1st_manual/01_manual1.gif, "
    "2nd_manual/01_manual2.gif, mask/01_test_mask.gif}"
)


def find_drive_root(root: str | Path) -> Path:
    """The folder holding ``training/`` and ``test/``: ``root`` itself or its single ``DRIVE`` sub-folder.

    Args:
        root: the dataset folder (the unpacked archive, or the folder that contains ``DRIVE/``).

    Raises:
        FileNotFoundError: ``root`` does not exist or holds neither ``training/`` nor ``test/``.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"DRIVE root {str(root)!r} is not a folder; {_LAYOUT}.")
    candidates = [root, root / "DRIVE", root / "drive"]
    for c in candidates:
        if (c / "training").is_dir() or (c / "test").is_dir():
            return c
    found = sorted(p.name for p in root.iterdir())[:20]
    raise FileNotFoundError(f"no training/ or test/ folder in {str(root)!r} (found: {found}); {_LAYOUT}.")


def _index(folder: Path, suffix: str) -> dict[str, Path]:
    """Map id -> file for files named ``<id><suffix>.<image ext>`` in ``folder`` (case-insensitive ext)."""
    out: dict[str, Path] = {}
    if not folder.is_dir():
        return out
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in _IMAGE_EXTS and p.stem.endswith(suffix):
            sid = p.stem[: len(p.stem) - len(suffix)]
            if sid in out:
                raise ValueError(f"two files for id {sid!r} in {str(folder)!r}: {out[sid].name} and {p.name}.")
            out[sid] = p
    return out


def drive_datalist(root: str | Path, split: str = "training", second_observer: bool = True) -> list[dict[str, str]]:
    """MONAI datalist of a DRIVE split: ``[{"image", "label", "mask"[, "label2"]}, ...]`` sorted by image id.

    Args:
        root: the DRIVE folder (with ``training/`` and ``test/``), or a folder containing ``DRIVE/``.
        split: ``"training"`` (alias ``"train"``) or ``"test"``. Defaults to "training".
        second_observer: for the test split, add ``label2`` from ``test/2nd_manual`` (and require it).
            Defaults to True.

    Returns:
        a list of dicts of absolute file paths (strings), one per image: ``image`` (RGB TIFF), ``label``
        (1st observer), ``mask`` (field of view) and, for the test split, ``label2`` (2nd observer).

    Raises:
        FileNotFoundError: a folder is missing or empty, or an image lacks its label / mask (all listed).
        ValueError: an unknown split, or annotation files that match no image (all listed).

    Example:
        >>> import tempfile
        >>> from monai_cnf.data import make_synthetic_drive
        >>> root = make_synthetic_drive(tempfile.mkdtemp(), num_train=1, num_test=0, image_size=(64, 64))
        >>> [Path(p).name for p in drive_datalist(root, "train")[0].values()]
        ['21_training.tif', '21_manual1.gif', '21_training_mask.gif']
    """
    key = str(split).lower()
    if key not in DRIVE_SPLITS:
        raise ValueError(f"split must be one of 'training' (or 'train') and 'test', got {split!r}.")
    split_name = DRIVE_SPLITS[key]
    base = find_drive_root(root) / split_name
    folders = {
        "image": (base / "images", f"_{split_name}", f"21_{split_name}.tif" if key != "test" else "01_test.tif"),
        "label": (base / "1st_manual", "_manual1", "21_manual1.gif" if key != "test" else "01_manual1.gif"),
        "mask": (
            base / "mask",
            f"_{split_name}_mask",
            f"21_{split_name}_mask.gif" if key != "test" else "01_test_mask.gif",
        ),
    }
    if split_name == "test" and second_observer:
        folders["label2"] = (base / "2nd_manual", "_manual2", "01_manual2.gif")
    missing_folders = [
        f"{folder} (files like {example})" for folder, _, example in folders.values() if not folder.is_dir()
    ]
    if missing_folders:
        hint = " (pass second_observer=False for a copy without 2nd_manual)" if "label2" in folders else ""
        raise FileNotFoundError(f"DRIVE {split_name} split: missing folder(s) {missing_folders}{hint}; {_LAYOUT}.")
    indexes = {k: _index(folder, suffix) for k, (folder, suffix, _) in folders.items()}
    if not indexes["image"]:
        folder, _, example = folders["image"]
        raise FileNotFoundError(f"no images in {str(folder)!r} (expected files like {example}); {_LAYOUT}.")
    missing: list[str] = []
    for sid in indexes["image"]:
        for k, (folder, suffix, _) in folders.items():
            if k != "image" and sid not in indexes[k]:
                missing.append(str(folder / f"{sid}{suffix}.gif"))
    if missing:
        raise FileNotFoundError(
            f"DRIVE {split_name} split: {len(missing)} annotation file(s) missing for existing images: {missing}"
        )
    unmatched = [
        str(p) for k, idx in indexes.items() if k != "image" for sid, p in idx.items() if sid not in indexes["image"]
    ]
    if unmatched:
        raise ValueError(
            f"DRIVE {split_name} split: {len(unmatched)} annotation file(s) match no image in "
            f"{str(folders['image'][0])!r}: {unmatched}"
        )
    return [{k: str(indexes[k][sid].resolve()) for k in folders} for sid in sorted(indexes["image"])]


def drive_load_transforms(
    keys: Sequence[str] = ("image", "label", "mask"),
    image_key: str = "image",
    allow_missing_keys: bool = False,
    equalize_contrast: bool = False,
) -> list[Any]:
    """MONAI transforms that load a DRIVE datalist item: image in [0, 1] ``(3, H, W)``, binary annotations.

    Args:
        keys: the keys to load; every key but ``image_key`` is binarised (> 0). Add ``"label2"`` for the
            test split's 2nd observer. Defaults to ``("image", "label", "mask")``.
        image_key: the RGB image key (scaled from 0..255 to [0, 1]). Defaults to "image".
        allow_missing_keys: don't raise for keys absent from an item. Defaults to False.
        equalize_contrast: add CLAHE per channel of the whole image
            (:class:`~monai_cnf.transforms.AdaptiveHistogramEqualized`, clip limit 0.01) after the scaling, before
            any crop a caller appends (the bundles' ``equalize_contrast`` key). Defaults to False.

    Returns:
        ``[LoadImaged, ScaleIntensityRanged, BinarizeLabeld]`` (see the module docstring for the JSON), then
        ``AdaptiveHistogramEqualized`` when ``equalize_contrast``.

    Example:
        >>> [type(t).__name__ for t in drive_load_transforms()]
        ['LoadImaged', 'ScaleIntensityRanged', 'BinarizeLabeld']
    """
    from monai.transforms import LoadImaged, ScaleIntensityRanged

    from monai_cnf.data.readers import image_readers
    from monai_cnf.transforms import BinarizeLabeld

    keys = list(keys)
    if image_key not in keys:
        raise ValueError(f"image_key {image_key!r} must be one of keys {keys}.")
    binary = [k for k in keys if k != image_key]
    out: list[Any] = [
        LoadImaged(
            keys,
            reader=image_readers(),
            ensure_channel_first=True,
            image_only=True,
            allow_missing_keys=allow_missing_keys,
        ),
        ScaleIntensityRanged(
            image_key, a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0, clip=True, allow_missing_keys=allow_missing_keys
        ),
    ]
    if binary:
        out.append(BinarizeLabeld(binary, threshold=0.0, allow_missing_keys=allow_missing_keys))
    if equalize_contrast:
        from monai_cnf.transforms import AdaptiveHistogramEqualized

        out.append(AdaptiveHistogramEqualized(image_key, allow_missing_keys=allow_missing_keys))
    return out
