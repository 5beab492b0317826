"""Post-processing for super-resolution inference: undo the input padding on an upscaled prediction.

MONAI's ``Invertd`` replays the input's padding inverse on the prediction, which only works when both have the
same size; a 2x SR prediction is ``scale`` times larger than the padded LR input, so the crop is recomputed here
from the input's traced original size.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from monai.config import KeysCollection
from monai.transforms import MapTransform

__all__ = ["CropToScaledInputd", "original_spatial_size"]


def original_spatial_size(image: Any) -> list[int]:
    """Spatial size of ``image`` before its traced (invertible) transforms, e.g. padding; else its current size.

    Example:
        >>> import torch
        >>> original_spatial_size(torch.zeros(3, 5, 7))
        [5, 7]
    """
    ops = getattr(image, "applied_operations", None) or []
    for op in ops:
        size = op.get("orig_size") if isinstance(op, Mapping) else None
        if size is not None:
            return [int(s) for s in size]
    return [int(s) for s in image.shape[1:]]


class CropToScaledInputd(MapTransform):
    """Crop ``pred`` (``(C, *spatial)``) to ``scale`` x the original (un-padded) size of ``image_key``.

    Padding must be at the end (right/bottom), as ``PadToSquared`` does by default; the crop keeps the start.

    Args:
        keys: prediction keys to crop.
        image_key: the (padded) input whose traced original size is used. Defaults to "image".
        scale: output size / input size. Defaults to 2.
        allow_missing_keys: don't raise for missing keys. Defaults to False.

    Example:
        >>> import torch
        >>> out = CropToScaledInputd("pred", scale=2)({"pred": torch.zeros(3, 8, 8), "image": torch.zeros(3, 3, 4)})
        >>> tuple(out["pred"].shape)
        (3, 6, 8)
    """

    def __init__(
        self, keys: KeysCollection, image_key: str = "image", scale: int = 2, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if int(scale) < 1:
            raise ValueError(f"scale must be a positive integer, got {scale}.")
        self.image_key = image_key
        self.scale = int(scale)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.image_key not in d:
            raise ValueError(f"image_key {self.image_key!r} is not in the data (keys: {list(d)}).")
        size = [s * self.scale for s in original_spatial_size(d[self.image_key])]
        for key in self.key_iterator(d):
            pred = d[key]
            index = (slice(None), *(slice(0, s) for s in size))
            d[key] = pred[index]  # a MetaTensor stays one (its filename is what SaveImaged names the output by)
        return d
