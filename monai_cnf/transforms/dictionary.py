"""Dictionary versions of :mod:`monai_cnf.transforms.array` (MONAI ``MapTransform`` style, ``XD = XDict = Xd``)."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.transforms import Cropd, MapTransform, Padd, RandAffined
from monai.utils import GridSampleMode, Method, PytorchPadMode, ensure_tuple

from monai_cnf.transforms.array import (
    AdaptiveHistogramEqualize,
    BicubicDownsample,
    BinarizeLabel,
    DivisibleCrop,
    PadToSquare,
    RandIsotropicAffine,
    RangeLike,
    ToRGB,
)

__all__ = [
    "AdaptiveHistogramEqualizeD",
    "AdaptiveHistogramEqualizeDict",
    "AdaptiveHistogramEqualized",
    "BicubicDownsampleD",
    "BicubicDownsampleDict",
    "BicubicDownsampled",
    "BinarizeLabelD",
    "BinarizeLabelDict",
    "BinarizeLabeld",
    "DivisibleCropD",
    "DivisibleCropDict",
    "DivisibleCropd",
    "PadToSquareD",
    "PadToSquareDict",
    "PadToSquared",
    "RandIsotropicAffineD",
    "RandIsotropicAffineDict",
    "RandIsotropicAffined",
    "ToRGBD",
    "ToRGBDict",
    "ToRGBd",
]


class RandIsotropicAffined(RandAffined):
    """Dictionary version of :class:`~monai_cnf.transforms.RandIsotropicAffine`: one draw for all keys.

    A MONAI :class:`~monai.transforms.RandAffined` whose random affine is the paper's (uniform rotation, one
    isotropic scale factor, normal shears), so ``inverse`` and ``Invertd`` undo it.

    Args:
        keys: keys to transform together (image, label, mask, ...).
        prob: probability of applying the transform. Defaults to 1.0.
        rotate_range: rotation range in radians. Defaults to (-pi, pi).
        scale_range: range of the single scale factor. Defaults to (0.8, 1.2).
        shear_std: standard deviation of the shear angles in degrees. Defaults to 10.
        uniform_rotation: 3D: rotations uniform over SO(3). Defaults to False.
        spatial_size: output spatial size; None keeps the input's. Defaults to None.
        mode: interpolation per key: ``"bilinear"`` for images, ``"nearest"`` for labels and masks (keeps {0, 1}).
            Defaults to ``"bilinear"`` for every key.
        padding_mode: per key; ``"zeros"``, ``"border"`` or ``"reflection"``. Defaults to ``"zeros"``.
        cache_grid: cache the identity grid when ``spatial_size`` is fixed. Defaults to False.
        device: device of the resampling. Defaults to None.
        allow_missing_keys: don't raise for missing keys. Defaults to False.
        lazy: MONAI lazy resampling flag. Defaults to False. Under a lazy ``Compose`` MONAI applies the pending
            resampling with the Compose's ``overrides`` (e.g. ``{"label": {"mode": "nearest"}}``), not with
            ``mode``, exactly as for its own ``RandAffined``; the bundles run eagerly.

    Example:
        >>> t = RandIsotropicAffined(["image", "label"], mode=("bilinear", "nearest")).set_random_state(0)
        >>> out = t({"image": torch.rand(3, 32, 32), "label": (torch.rand(1, 32, 32) > 0.5).float()})
        >>> sorted(torch.unique(out["label"]).tolist())
        [0.0, 1.0]
    """

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 1.0,
        rotate_range: RangeLike | Sequence[RangeLike] = (-math.pi, math.pi),
        scale_range: RangeLike = (0.8, 1.2),
        shear_std: float = 10.0,
        uniform_rotation: bool = False,
        spatial_size: Sequence[int] | int | None = None,
        mode: str | int | Sequence[str | int] = GridSampleMode.BILINEAR,
        padding_mode: str | Sequence[str] = "zeros",
        cache_grid: bool = False,
        device: torch.device | None = None,
        allow_missing_keys: bool = False,
        lazy: bool = False,
    ) -> None:
        super().__init__(
            keys,
            spatial_size=spatial_size,
            prob=prob,
            mode=mode,  # type: ignore[arg-type]
            padding_mode=padding_mode,
            cache_grid=cache_grid,
            device=device,
            allow_missing_keys=allow_missing_keys,
            lazy=lazy,
        )
        self.rand_affine = RandIsotropicAffine(
            prob=1.0,  # the probability is handled by this class, as in RandAffined
            rotate_range=rotate_range,
            scale_range=scale_range,
            shear_std=shear_std,
            uniform_rotation=uniform_rotation,
            spatial_size=spatial_size,
            cache_grid=cache_grid,
            device=device,
            lazy=lazy,
        )


class BinarizeLabeld(MapTransform):
    """Dictionary version of :class:`~monai_cnf.transforms.BinarizeLabel` (values ``> threshold`` -> 1.0).

    Args:
        keys: keys to binarise (e.g. ``["label", "label2", "mask"]``).
        threshold: values strictly above it are foreground. Defaults to 0.
        allow_missing_keys: don't raise for missing keys. Defaults to False.

    Example:
        >>> BinarizeLabeld("label")({"label": torch.tensor([[0.0, 255.0]])})["label"].tolist()
        [[0.0, 1.0]]
    """

    backend = BinarizeLabel.backend

    def __init__(self, keys: KeysCollection, threshold: float = 0.0, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.binarize = BinarizeLabel(threshold)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.binarize(d[key])
        return d


class PadToSquared(Padd):
    """Dictionary version of :class:`~monai_cnf.transforms.PadToSquare` (the SR "pad right/bottom to a square").

    Args:
        keys: keys to pad.
        k: the side is rounded up to a multiple of ``k``. Defaults to 1.
        method: ``"end"`` (right / bottom) or ``"symmetric"``. Defaults to "end".
        mode: padding mode, one or one per key. Defaults to ``"constant"`` (zeros).
        allow_missing_keys: don't raise for missing keys. Defaults to False.
        lazy: MONAI lazy flag. Defaults to False.
        kwargs: passed to the padding function.

    Example:
        >>> PadToSquared("image", k=8)({"image": torch.ones(3, 10, 7)})["image"].shape
        torch.Size([3, 16, 16])
    """

    def __init__(
        self,
        keys: KeysCollection,
        k: int = 1,
        method: str = Method.END,
        mode: str | Sequence[str] = PytorchPadMode.CONSTANT,
        allow_missing_keys: bool = False,
        lazy: bool = False,
        **kwargs,
    ) -> None:
        padder = PadToSquare(k=k, method=method, lazy=lazy, **kwargs)
        super().__init__(keys, padder=padder, mode=mode, allow_missing_keys=allow_missing_keys, lazy=lazy)


class DivisibleCropd(Cropd):
    """Dictionary version of :class:`~monai_cnf.transforms.DivisibleCrop` ("modcrop" to a multiple of ``k``).

    Args:
        keys: keys to crop.
        k: the divisor, one or one per spatial axis. Defaults to 2.
        method: ``"end"`` or ``"symmetric"``. Defaults to "end".
        allow_missing_keys: don't raise for missing keys. Defaults to False.
        lazy: MONAI lazy flag. Defaults to False.

    Example:
        >>> DivisibleCropd("image", k=2)({"image": torch.ones(3, 391, 586)})["image"].shape
        torch.Size([3, 390, 586])
    """

    def __init__(
        self,
        keys: KeysCollection,
        k: Sequence[int] | int = 2,
        method: str = Method.END,
        allow_missing_keys: bool = False,
        lazy: bool = False,
    ) -> None:
        super().__init__(
            keys, cropper=DivisibleCrop(k=k, method=method, lazy=lazy), allow_missing_keys=allow_missing_keys, lazy=lazy
        )


class ToRGBd(MapTransform):
    """Dictionary version of :class:`~monai_cnf.transforms.ToRGB` (1 channel -> 3, alpha dropped).

    Example:
        >>> ToRGBd("image")({"image": torch.zeros(1, 2, 2)})["image"].shape
        torch.Size([3, 2, 2])
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.to_rgb = ToRGB()

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.to_rgb(d[key])
        return d


class AdaptiveHistogramEqualized(MapTransform):
    """Dictionary version of :class:`~monai_cnf.transforms.AdaptiveHistogramEqualize` (CLAHE per channel).

    Example:
        >>> img = torch.linspace(0.4, 0.6, 64 * 64).reshape(1, 64, 64)
        >>> AdaptiveHistogramEqualized("image")({"image": img})["image"].shape
        torch.Size([1, 64, 64])
    """

    def __init__(
        self,
        keys: KeysCollection,
        clip_limit: float = 0.01,
        kernel_size: int | Sequence[int] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.equalize = AdaptiveHistogramEqualize(clip_limit=clip_limit, kernel_size=kernel_size)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.equalize(d[key])
        return d


class BicubicDownsampled(MapTransform):
    """Dictionary version of :class:`~monai_cnf.transforms.BicubicDownsample`: writes the LR image to a new key.

    Args:
        keys: keys of the high-resolution images.
        lr_key: key(s) for the low-resolution results, one per key; None overwrites ``keys``. Defaults to "lr".
        scale: the downscaling factor. Defaults to 2.
        antialias: widen the kernel by ``scale`` (MATLAB's default). Defaults to True.
        quantize: clip to ``[0, max_value]`` and round (MATLAB ``imresize`` on ``uint8``). Defaults to False.
        max_value: clipping bound used by ``quantize``. Defaults to 255.
        divisor: the LR image is divided by it (255 gives the [0, 1] conditioning convention). Defaults to 1.
        allow_missing_keys: don't raise for missing keys. Defaults to False.

    Example:
        >>> t = BicubicDownsampled("hr", lr_key="lr", scale=2, quantize=True, divisor=255.0)
        >>> out = t({"hr": torch.full((3, 64, 64), 51.0)})
        >>> tuple(out["lr"].shape), round(out["lr"].max().item(), 4)
        ((3, 32, 32), 0.2)
    """

    def __init__(
        self,
        keys: KeysCollection,
        lr_key: str | Sequence[str] | None = "lr",
        scale: float = 2,
        antialias: bool = True,
        quantize: bool = False,
        max_value: float = 255.0,
        divisor: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.lr_keys = self.keys if lr_key is None else ensure_tuple(lr_key)
        if len(self.lr_keys) != len(self.keys):
            raise ValueError(f"lr_key needs one key per key in keys ({len(self.keys)}), got {lr_key}.")
        self.downsample = BicubicDownsample(
            scale=scale, antialias=antialias, quantize=quantize, max_value=max_value, divisor=divisor
        )

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key, lr_key in self.key_iterator(d, self.lr_keys):
            d[lr_key] = self.downsample(d[key])
        return d


RandIsotropicAffineD = RandIsotropicAffineDict = RandIsotropicAffined
BinarizeLabelD = BinarizeLabelDict = BinarizeLabeld
PadToSquareD = PadToSquareDict = PadToSquared
DivisibleCropD = DivisibleCropDict = DivisibleCropd
ToRGBD = ToRGBDict = ToRGBd
BicubicDownsampleD = BicubicDownsampleDict = BicubicDownsampled
AdaptiveHistogramEqualizeD = AdaptiveHistogramEqualizeDict = AdaptiveHistogramEqualized
