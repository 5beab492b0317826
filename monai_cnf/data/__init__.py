"""Datasets for the CNF bundles: DRIVE datalists and loaders, the synthetic retina set, SR pairs, ImageNet32/64.

- :func:`drive_datalist`, :func:`drive_load_transforms`: DRIVE's official layout -> MONAI datalists / loaders.
- :func:`make_synthetic_drive`: a seeded synthetic retina set in DRIVE's layout (the default with no data).
- :func:`sr_datalist`, :func:`skimage_datalist`, :func:`sr_pair_transforms`, :func:`sr_pair_dataset`:
  (HR, bicubic LR) pairs from image folders (Set5/Set14/BSD100, T91, ...) or scikit-image's photos.
- :class:`ImageNetDownsampledDataset`: the ImageNet32/64 ``.npz`` batches.
- :func:`image_readers`: the readers every bundle loads with (PNG/TIFF/JPEG/GIF, NIfTI, DICOM), and
  :func:`is_row_major`, the axis order a file is loaded in.

Nothing here imports MONAI at module import time (the loaders import it when called).
"""

from __future__ import annotations

from monai_cnf.data.drive import DRIVE_SPLITS, drive_datalist, drive_load_transforms, find_drive_root
from monai_cnf.data.readers import RASTER_SUFFIXES, image_readers, is_row_major
from monai_cnf.data.sr import (
    SKIMAGE_SR_IMAGES,
    ImageNetDownsampledDataset,
    skimage_datalist,
    sr_datalist,
    sr_pair_dataset,
    sr_pair_transforms,
)
from monai_cnf.data.synthetic import SyntheticRetina, make_synthetic_drive, synthesize_retina

__all__ = [
    "DRIVE_SPLITS",
    "RASTER_SUFFIXES",
    "SKIMAGE_SR_IMAGES",
    "ImageNetDownsampledDataset",
    "SyntheticRetina",
    "drive_datalist",
    "drive_load_transforms",
    "find_drive_root",
    "image_readers",
    "is_row_major",
    "make_synthetic_drive",
    "skimage_datalist",
    "sr_datalist",
    "sr_pair_dataset",
    "sr_pair_transforms",
    "synthesize_retina",
]
