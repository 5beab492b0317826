"""Filters for third-party messages that say nothing about the run; importing this module imports nothing heavy.

Used by :mod:`monai_cnf.data.readers` (at import) and by the CLI's logging set-up, so that a bundle loading images
without monai_cnf's readers is quiet too.
"""

from __future__ import annotations

__all__ = ["quiet_nvimgcodec"]


def quiet_nvimgcodec() -> None:
    """With pydicom installed, every ``LoadImage`` also builds MONAI's GPU DICOM reader (nvImageCodec), which logs
    a warning and warns twice more when nvImageCodec is absent (every CPU machine), although the file is then read
    by the plain pydicom reader. Those two messages say nothing about the data, so they are filtered (only them).
    Neither filter imports MONAI."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader: nvImageCodec decoder plugin")
    logger = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
    if not any(getattr(f, "_monai_cnf", False) for f in logger.filters):
        quiet = logging.Filter()
        quiet.filter = lambda record: "nvImageCodec is not available" not in record.getMessage()  # type: ignore[method-assign]
        quiet._monai_cnf = True  # type: ignore[attr-defined]
        logger.addFilter(quiet)
