"""MONAI transforms for the CNF bundles (array versions and ``d``/``D``/``Dict`` dictionary versions).

- :class:`RandIsotropicAffine` / :class:`RandIsotropicAffined`: the paper's augmentation (uniform rotation,
  one isotropic scale factor, normally distributed shears), built on MONAI's ``RandAffine`` (invertible).
- :class:`BinarizeLabel` / :class:`BinarizeLabeld`: any value ``> 0`` is foreground -> exactly {0., 1.}.
- :class:`PadToSquare` / :class:`PadToSquared`: the SR convention (zero pad right/bottom to a square, optionally
  to a multiple of ``k``; ``Invertd`` crops back). For fixed sizes and multiples of ``2**L`` use MONAI's
  ``SpatialPadd`` / ``DivisiblePadd``.
- :class:`DivisibleCrop` / :class:`DivisibleCropd`: "modcrop" to a multiple of the SR scale.
- :class:`ToRGB` / :class:`ToRGBd`: greyscale -> 3 channels.
- :class:`BicubicDownsample` / :class:`BicubicDownsampled`: MATLAB ``imresize`` bicubic with antialiasing.
- :class:`AdaptiveHistogramEqualize` / :class:`AdaptiveHistogramEqualized`: CLAHE per channel (scikit-image), for
  the whole image before any crop.
"""

from __future__ import annotations

from monai_cnf.transforms.array import (
    AdaptiveHistogramEqualize,
    BicubicDownsample,
    BinarizeLabel,
    DivisibleCrop,
    IsotropicAffineGrid,
    PadToSquare,
    RandIsotropicAffine,
    ToRGB,
)
from monai_cnf.transforms.bicubic import bicubic_resize, cubic_kernel, imresize_weights
from monai_cnf.transforms.dictionary import (
    AdaptiveHistogramEqualizeD,
    AdaptiveHistogramEqualized,
    AdaptiveHistogramEqualizeDict,
    BicubicDownsampleD,
    BicubicDownsampled,
    BicubicDownsampleDict,
    BinarizeLabelD,
    BinarizeLabeld,
    BinarizeLabelDict,
    DivisibleCropD,
    DivisibleCropd,
    DivisibleCropDict,
    PadToSquareD,
    PadToSquared,
    PadToSquareDict,
    RandIsotropicAffineD,
    RandIsotropicAffined,
    RandIsotropicAffineDict,
    ToRGBD,
    ToRGBd,
    ToRGBDict,
)

__all__ = [
    "AdaptiveHistogramEqualize",
    "AdaptiveHistogramEqualizeD",
    "AdaptiveHistogramEqualizeDict",
    "AdaptiveHistogramEqualized",
    "BicubicDownsample",
    "BicubicDownsampleD",
    "BicubicDownsampleDict",
    "BicubicDownsampled",
    "BinarizeLabel",
    "BinarizeLabelD",
    "BinarizeLabelDict",
    "BinarizeLabeld",
    "DivisibleCrop",
    "DivisibleCropD",
    "DivisibleCropDict",
    "DivisibleCropd",
    "IsotropicAffineGrid",
    "PadToSquare",
    "PadToSquareD",
    "PadToSquareDict",
    "PadToSquared",
    "RandIsotropicAffine",
    "RandIsotropicAffineD",
    "RandIsotropicAffineDict",
    "RandIsotropicAffined",
    "ToRGB",
    "ToRGBD",
    "ToRGBDict",
    "ToRGBd",
    "bicubic_resize",
    "cubic_kernel",
    "imresize_weights",
]
