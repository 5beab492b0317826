"""The image readers the bundles load with: MONAI's own, tried in turn, so PNG/TIFF/JPEG/GIF, NIfTI and DICOM load.

``LoadImaged(keys, reader=image_readers(), ensure_channel_first=True, image_only=True)`` is what every bundle
config writes (``"reader": "$monai_cnf.data.image_readers()"``). MONAI's ``LoadImage`` tries the readers it is
given from the last to the first and takes the first that reads the file, then its default readers:

1. ``PILReader(reverse_indexing=False)`` for raster files (``.png .tif .tiff .jpg .jpeg .gif .bmp``). DRIVE ships
   ``.tif`` images and ``.gif`` labels, which MONAI's suffix-based auto-selection would send to ITK (a 110 MB
   dependency) because its ``PILReader`` only claims ``png/jpg/jpeg/bmp``; PIL reads them all. Row-major
   ``(C, H, W)``, the convention every bundle trains with (see :mod:`monai_cnf.data.drive`).
2. :class:`DicomReader` (MONAI's ``PydicomReader``) for DICOM, in MONAI's ``(x, y)`` = (column, row) order with
   the affine from the DICOM geometry.
3. ``NibabelReader`` for NIfTI, in the file's voxel order ``(i, j[, k])`` with its affine.

A NIfTI or DICOM image therefore reaches the network in its voxel order, not transposed to (row, column):
for the DRIVE CNF that is the mirror image of a fundus photograph (a left eye for a right one); for SR it is
immaterial. ``cnf sample`` writes the outputs back in the same order with the input's affine, so they overlay
the input in any viewer. :func:`is_row_major` tells which convention a file is loaded in.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from monai_cnf._quiet import quiet_nvimgcodec

__all__ = ["RASTER_SUFFIXES", "image_readers", "is_row_major"]  # and DicomReader, built on first use

#: Files the bundles read with PIL in row-major ``(C, H, W)`` order.
RASTER_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".gif", ".bmp")


def is_row_major(path: str | Path) -> bool:
    """Whether :func:`image_readers` loads ``path`` in row-major ``(C, H, W)`` order (raster files) rather than
    MONAI's ``(x, y)`` voxel order (NIfTI, DICOM).

    >>> is_row_major("01_test.tif"), is_row_major("scan.nii.gz"), is_row_major("slice.dcm")
    (True, False, False)
    """
    return Path(path).suffix.lower() in RASTER_SUFFIXES


@functools.cache
def _dicom_reader_class() -> type:
    from monai.data import PydicomReader

    class _DicomReader(PydicomReader):
        """MONAI's ``PydicomReader`` that also reads colour DICOM (``SamplesPerPixel > 1``, e.g. ophthalmic
        photographs): MONAI's reader keeps the samples axis last but counts it as spatial (spatial shape
        ``(X, Y, 3)``, no channel dim), so ``ensure_channel_first`` gives ``(1, X, Y, 3)``. Here it becomes the
        channel axis: ``(3, X, Y)`` after ``ensure_channel_first``. Grey DICOM is read exactly as MONAI does."""

        def get_data(self, data: Any) -> tuple[Any, dict]:
            array, meta = super().get_data(data)
            datasets = data if isinstance(data, (list, tuple)) else [data]
            samples = int(getattr(datasets[0], "SamplesPerPixel", 1) or 1)
            if samples > 1 and array.shape[-1] == samples:
                from monai.utils import MetaKeys

                meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = -1
                meta[MetaKeys.SPATIAL_SHAPE] = tuple(meta[MetaKeys.SPATIAL_SHAPE])[: array.ndim - 1]
            return array, meta

    _DicomReader.__name__ = _DicomReader.__qualname__ = "DicomReader"
    return _DicomReader


def __getattr__(name: str) -> Any:
    # built on first use: importing MONAI (about 5 s) is kept out of ``import monai_cnf.data``
    if name == "DicomReader":
        return _dicom_reader_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


quiet_nvimgcodec()  # any LoadImage (MONAI registers its GPU DICOM reader in every one), not only ours


def image_readers() -> list[Any]:
    """The bundles' reader list for ``LoadImage(d)``: NIfTI, DICOM, then raster files (tried last to first).

    DICOM support needs ``pydicom`` (a dependency of monai-cnf); without it the list holds the other two.

    Example:
        >>> [type(r).__name__ for r in image_readers()]
        ['NibabelReader', 'DicomReader', 'PILReader']
    """
    from monai.data import NibabelReader, PILReader
    from monai.utils import optional_import

    readers: list[Any] = [NibabelReader()]
    if optional_import("pydicom")[1]:
        readers.append(_dicom_reader_class()())
    readers.append(PILReader(reverse_indexing=False))
    return readers
