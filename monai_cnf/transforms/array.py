"""Array transforms for the CNF bundles: the paper's isotropic affine augmentation, label binarisation,
padding to a square, cropping to a multiple of the SR scale, RGB conversion and MATLAB bicubic downscaling.

Each one acts on a channel-first array ``(C, *spatial)`` with 2 or 3 spatial dimensions. MONAI's own
transforms are reused wherever they do the job: ``SpatialPad`` pads DRIVE to 1024x1024, ``DivisiblePad``
pads to a multiple of ``2**L``, ``Invertd`` undoes all of these (they record what they did).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from monai.config import DtypeLike, NdarrayOrTensor
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import AffineGrid, Crop, Pad, RandAffine, RandAffineGrid, Transform
from monai.transforms.utils import create_rotate, create_scale
from monai.utils import GridSampleMode, Method, PytorchPadMode, TransformBackends, convert_to_tensor, ensure_tuple

from monai_cnf.transforms.bicubic import bicubic_resize

__all__ = [
    "AdaptiveHistogramEqualize",
    "BicubicDownsample",
    "BinarizeLabel",
    "DivisibleCrop",
    "IsotropicAffineGrid",
    "PadToSquare",
    "RandIsotropicAffine",
    "ToRGB",
]

RangeLike = Sequence[float] | float


def _as_pair(value: RangeLike, name: str) -> tuple[float, float]:
    """A ``(low, high)`` pair from ``x`` (meaning ``(-x, x)``) or ``(low, high)``."""
    if isinstance(value, (int, float)):
        return -abs(float(value)), abs(float(value))
    pair = tuple(float(v) for v in value)
    if len(pair) != 2 or pair[0] > pair[1]:
        raise ValueError(
            f"{name} must be a number x (meaning (-x, x)) or a pair (low, high) with low <= high, got {value}."
        )
    return pair  # type: ignore[return-value]


def _rotate_ranges(rotate_range: RangeLike | Sequence[RangeLike]) -> tuple[tuple[float, float], ...]:
    """Three per-axis ``(low, high)`` angle ranges (radians); 2D uses the first."""
    if isinstance(rotate_range, (int, float)):
        return (_as_pair(rotate_range, "rotate_range"),) * 3
    items = list(rotate_range)
    if len(items) == 2 and all(isinstance(v, (int, float)) for v in items):
        return (_as_pair(items, "rotate_range"),) * 3
    if len(items) in (1, 3):
        pairs = tuple(_as_pair(v, "rotate_range") for v in items)
        return pairs * 3 if len(pairs) == 1 else pairs
    raise ValueError(
        "rotate_range must be x (meaning (-x, x)), a pair (low, high) used for every axis, or one range per "
        f"rotation axis (3 in 3D), in radians; got {rotate_range}."
    )


class IsotropicAffineGrid(RandAffineGrid):
    r"""Random affine grid of the paper's augmentation: rotation, ONE isotropic scale factor, normal shears.

    Each :meth:`randomize` draws, independently of the image's dimensionality (so one draw serves 2D and 3D):

    - rotation angles :math:`\theta_a \sim U[\mathrm{low}_a, \mathrm{high}_a)`, three of them (2D uses the
      first, 3D all three, composed by :func:`monai.transforms.utils.create_rotate`); or, with
      ``uniform_rotation=True`` in 3D, a rotation uniform over SO(3) (a normalised Gaussian quaternion);
    - one scale factor :math:`s \sim U[\mathrm{low}, \mathrm{high})` shared by all axes;
    - shear angles :math:`\phi_k \sim \mathcal{N}(0, \sigma^2)` in degrees (2 used in 2D, 6 in 3D); the shear
      matrix ``H`` is the identity with its off-diagonal entries, row by row, set to :math:`\tan\phi_k`
      (2D: ``[[1, tan phi_0], [tan phi_1, 1]]``).

    The image content is moved by :math:`A = R\,H\,S` about the image centre: a structure of length ``l`` ends
    up of length ``s * l`` (before shearing). MONAI grids map output to input coordinates, so the grid (and the
    matrix recorded for ``Invertd``) is :math:`A^{-1}`.

    Args:
        rotate_range: rotation angle range in radians: ``x`` for ``(-x, x)``, a pair ``(low, high)`` for every
            axis, or one range per axis (3 in 3D). Defaults to ``(-pi, pi)`` (uniform over 360 degrees).
        scale_range: ``(low, high)`` of the isotropic scale factor (1.0 = no scaling). Defaults to ``(0.8, 1.2)``.
        shear_std: standard deviation of the shear angles in degrees (0 disables shearing). Defaults to 10.
        uniform_rotation: 3D only: draw the rotation uniformly over SO(3) instead of three independent Euler
            angles from ``rotate_range`` (which is then unused). Defaults to False.
        device: device of the grid. Defaults to None.
        dtype: grid dtype. Defaults to float32.
        lazy: MONAI lazy resampling flag. Defaults to False.
    """

    def __init__(
        self,
        rotate_range: RangeLike | Sequence[RangeLike] = (-math.pi, math.pi),
        scale_range: RangeLike = (0.8, 1.2),
        shear_std: float = 10.0,
        uniform_rotation: bool = False,
        device: torch.device | None = None,
        dtype: DtypeLike = np.float32,
        lazy: bool = False,
    ) -> None:
        super().__init__(device=device, dtype=dtype, lazy=lazy)
        self.rotate_ranges = _rotate_ranges(rotate_range)
        scale_pair = tuple(float(v) for v in ensure_tuple(scale_range))
        if len(scale_pair) != 2 or not 0 < scale_pair[0] <= scale_pair[1]:
            raise ValueError(f"scale_range must be a pair (low, high) with 0 < low <= high, got {scale_range}.")
        self.scale_range = scale_pair
        if shear_std < 0 or shear_std >= 45:
            raise ValueError(f"shear_std must be in [0, 45) degrees, got {shear_std}.")
        self.shear_std = float(shear_std)
        self.uniform_rotation = bool(uniform_rotation)
        self.rotate_angles = np.zeros(3)  # radians
        self.scale_factor = 1.0
        self.shear_angles = np.zeros(6)  # degrees
        self.quaternion = np.array([1.0, 0.0, 0.0, 0.0])

    def randomize(self, data: Any | None = None) -> None:
        self.rotate_angles = np.array([self.R.uniform(lo, hi) for lo, hi in self.rotate_ranges])
        self.scale_factor = float(self.R.uniform(*self.scale_range))
        # clipped at 80 degrees (more than 8 sigma for shear_std < 10) so tan() stays finite
        self.shear_angles = np.clip(self.R.normal(0.0, 1.0, size=6) * self.shear_std, -80.0, 80.0)
        if self.uniform_rotation:
            q = self.R.normal(size=4)
            self.quaternion = q / np.linalg.norm(q)

    def rotation_matrix(self, spatial_dims: int) -> np.ndarray:
        """The rotation part ``R`` of the last draw, ``(spatial_dims, spatial_dims)``."""
        if spatial_dims == 3 and self.uniform_rotation:
            w, x, y, z = self.quaternion
            return np.array(
                [
                    [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                    [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                    [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
                ]
            )
        angles = self.rotate_angles[0] if spatial_dims == 2 else self.rotate_angles
        rot = create_rotate(spatial_dims, angles, backend="numpy")
        return np.asarray(rot)[:spatial_dims, :spatial_dims]

    def forward_matrix(self, spatial_dims: int) -> np.ndarray:
        """The homogeneous matrix ``A = R H S`` moving the image content, ``(spatial_dims + 1,) * 2``."""
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        rot = np.eye(spatial_dims + 1)
        rot[:spatial_dims, :spatial_dims] = self.rotation_matrix(spatial_dims)
        # one matrix with every off-diagonal entry a shear factor tan(phi), row by row (the layout MONAI's
        # create_shear documents; its implementation composes elementary shears, which adds cross terms)
        shear = np.eye(spatial_dims + 1)
        off = [(i, j) for i in range(spatial_dims) for j in range(spatial_dims) if i != j]
        for (i, j), phi in zip(off, self.shear_angles, strict=False):
            shear[i, j] = math.tan(math.radians(float(phi)))
        scale = create_scale(spatial_dims, [self.scale_factor] * spatial_dims, backend="numpy")
        return rot @ shear @ np.asarray(scale)

    def __call__(
        self,
        spatial_size: Sequence[int] | None = None,
        grid: NdarrayOrTensor | None = None,
        randomize: bool = True,
        lazy: bool | None = None,
    ) -> torch.Tensor:
        if randomize:
            self.randomize()
        lazy_ = self.lazy if lazy is None else lazy
        if grid is not None:
            spatial_dims = len(grid.shape) - 1
        elif spatial_size is not None:
            spatial_dims = len(spatial_size)
        else:
            raise ValueError("IsotropicAffineGrid needs spatial_size or grid to know the number of spatial dims.")
        grid_affine = np.linalg.inv(self.forward_matrix(spatial_dims))
        affine_grid = AffineGrid(affine=torch.as_tensor(grid_affine), device=self.device, dtype=self.dtype, lazy=lazy_)
        if lazy_:
            self.affine = affine_grid(spatial_size, grid)[1]
            return None  # type: ignore[return-value]
        out, self.affine = affine_grid(spatial_size, grid)
        return out  # type: ignore[return-value]


class RandIsotropicAffine(RandAffine):
    r"""The paper's augmentation: uniform rotation, one isotropic scale factor, normally distributed shears.

    A MONAI :class:`~monai.transforms.RandAffine` whose random grid is :class:`IsotropicAffineGrid`, so it
    resamples, records and inverts (``inverse``, ``Invertd``) exactly like MONAI's own. MONAI's RandAffine
    draws one scale factor per axis (anisotropic) and uniform shears; the paper (DRIVE training) uses
    "360 degree rotation augmentation, isotropic scalings in the range [0.8, 1.2], and shears drawn from a
    normal distribution with standard deviation 10 degrees".

    Args:
        prob: probability of applying the transform. Defaults to 1.0.
        rotate_range: rotation angle range in radians (see :class:`IsotropicAffineGrid`). Defaults to (-pi, pi).
        scale_range: range of the single scale factor. Defaults to (0.8, 1.2).
        shear_std: standard deviation of the shear angles in degrees. Defaults to 10.
        uniform_rotation: 3D: rotations uniform over SO(3). Defaults to False.
        spatial_size: output spatial size; None keeps the input's. Defaults to None.
        mode: interpolation, ``"bilinear"`` for images, ``"nearest"`` for labels (keeps {0, 1}). Defaults to bilinear.
        padding_mode: ``"zeros"``, ``"border"`` or ``"reflection"``. Defaults to ``"zeros"`` (black outside the
            field of view, no spurious vessels in labels).
        cache_grid: cache the identity grid when ``spatial_size`` is fixed. Defaults to False.
        device: device of the resampling. Defaults to None.
        lazy: MONAI lazy resampling flag. Defaults to False.

    Example:
        >>> t = RandIsotropicAffine(mode="nearest").set_random_state(0)
        >>> y = (torch.rand(1, 32, 32) > 0.5).float()
        >>> sorted(torch.unique(t(y)).tolist())
        [0.0, 1.0]
    """

    def __init__(
        self,
        prob: float = 1.0,
        rotate_range: RangeLike | Sequence[RangeLike] = (-math.pi, math.pi),
        scale_range: RangeLike = (0.8, 1.2),
        shear_std: float = 10.0,
        uniform_rotation: bool = False,
        spatial_size: Sequence[int] | int | None = None,
        mode: str | int = GridSampleMode.BILINEAR,
        padding_mode: str = "zeros",
        cache_grid: bool = False,
        device: torch.device | None = None,
        lazy: bool = False,
    ) -> None:
        super().__init__(
            prob=prob,
            spatial_size=spatial_size,
            mode=mode,
            padding_mode=padding_mode,
            cache_grid=cache_grid,
            device=device,
            lazy=lazy,
        )
        self.rand_affine_grid = IsotropicAffineGrid(
            rotate_range=rotate_range,
            scale_range=scale_range,
            shear_std=shear_std,
            uniform_rotation=uniform_rotation,
            device=device,
            lazy=lazy,
        )


class BinarizeLabel(Transform):
    """Binarise a label: values ``> threshold`` become 1.0, the rest 0.0 (float32, exactly {0., 1.}).

    DRIVE's 1st-observer labels and FOV masks store vessels as 255, the 2nd observer's palette GIFs as 1;
    ``threshold=0`` treats both as vessel. (MONAI's ``AsDiscrete(threshold=t)`` tests ``>= t``.)

    Args:
        threshold: values strictly above it are foreground. Defaults to 0.

    Example:
        >>> BinarizeLabel()(torch.tensor([[0.0, 1.0, 255.0]])).tolist()
        [[0.0, 1.0, 1.0]]
    """

    backend: ClassVar[list[TransformBackends]] = [TransformBackends.TORCH]

    def __init__(self, threshold: float = 0.0) -> None:
        self.threshold = float(threshold)

    def __call__(self, img: NdarrayOrTensor) -> torch.Tensor:
        t = convert_to_tensor(img, track_meta=get_track_meta())
        return (t > self.threshold).to(torch.float32)


class PadToSquare(Pad):
    """Pad every spatial axis to the largest one (a square / cube), optionally rounded up to a multiple of ``k``.

    The super-resolution convention of the paper: "we pad the test images with zeros at right and bottom to
    make them square and suitable for our model" (``method="end"``), then crop the prediction back to the
    original size: ``inverse`` / ``Invertd`` do that exactly (it is a MONAI :class:`~monai.transforms.Pad`).

    Args:
        k: the side is rounded up to a multiple of ``k`` (e.g. ``2**num_levels``); 1 keeps the largest side.
            Defaults to 1.
        method: ``"end"`` pads after the data (right / bottom), ``"symmetric"`` on both sides. Defaults to "end".
        mode: padding mode of :class:`~monai.transforms.Pad`. Defaults to ``"constant"`` (zeros).
        lazy: MONAI lazy flag. Defaults to False.
        kwargs: passed to the padding function (e.g. ``value``).

    Example:
        >>> PadToSquare(k=4)(torch.ones(1, 5, 3)).shape
        torch.Size([1, 8, 8])
    """

    def __init__(
        self, k: int = 1, method: str = Method.END, mode: str = PytorchPadMode.CONSTANT, lazy: bool = False, **kwargs
    ) -> None:
        if int(k) < 1:
            raise ValueError(f"k must be a positive integer (1 for no rounding), got {k}.")
        self.k = int(k)
        self.method = Method(method)
        super().__init__(mode=mode, lazy=lazy, **kwargs)

    def compute_pad_width(self, spatial_shape: Sequence[int]) -> tuple[tuple[int, int]]:
        side = max(int(s) for s in spatial_shape)
        side = -(-side // self.k) * self.k
        widths = [(0, 0)]
        for s in spatial_shape:
            total = side - int(s)
            lo = total // 2 if self.method == Method.SYMMETRIC else 0
            widths.append((lo, total - lo))
        return tuple(widths)  # type: ignore[return-value]


class DivisibleCrop(Crop):
    """Crop every spatial axis down to a multiple of ``k`` ("modcrop" before bicubic downscaling by ``k``).

    MONAI has ``DivisiblePad`` but no cropping counterpart. The crop removes the last ``n % k`` rows / columns
    (``method="end"``, as MATLAB's ``modcrop``) or splits them over both sides (``"symmetric"``);
    ``inverse`` pads them back with zeros.

    Args:
        k: the divisor, one for all axes or one per axis. Defaults to 2.
        method: ``"end"`` or ``"symmetric"``. Defaults to "end".
        lazy: MONAI lazy flag. Defaults to False.

    Example:
        >>> DivisibleCrop(2)(torch.ones(3, 361, 250)).shape
        torch.Size([3, 360, 250])
    """

    def __init__(self, k: Sequence[int] | int = 2, method: str = Method.END, lazy: bool = False) -> None:
        ks = [int(v) for v in ensure_tuple(k)]
        if any(v < 1 for v in ks):
            raise ValueError(f"k must be positive integers, got {k}.")
        self.k = ks
        self.method = Method(method)
        super().__init__(lazy=lazy)

    def __call__(self, img: torch.Tensor, lazy: bool | None = None) -> torch.Tensor:  # type: ignore[override]
        shape = img.peek_pending_shape() if isinstance(img, MetaTensor) else img.shape[1:]
        ks = self.k * len(shape) if len(self.k) == 1 else self.k
        if len(ks) != len(shape):
            raise ValueError(f"k has {len(ks)} values but the image has {len(shape)} spatial dims.")
        slices = []
        for n, kk in zip(shape, ks, strict=True):
            extra = int(n) % kk
            start = extra // 2 if self.method == Method.SYMMETRIC else 0
            slices.append(slice(start, int(n) - (extra - start)))
        return super().__call__(img=img, slices=tuple(slices), lazy=lazy)


class ToRGB(Transform):
    """Make a channel-first image RGB: 1 channel is repeated 3 times, a 4th (alpha) channel is dropped.

    Super-resolution benchmarks mix RGB and greyscale files (Set14's bridge); models expect 3 channels.

    Example:
        >>> ToRGB()(torch.zeros(1, 4, 4)).shape
        torch.Size([3, 4, 4])
    """

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        c = img.shape[0]
        if c == 3:
            return img
        if c == 1:
            return img.repeat(3, *([1] * (img.ndim - 1)))
        if c in (2, 4):  # grey + alpha, RGB + alpha
            return img[:1].repeat(3, *([1] * (img.ndim - 1))) if c == 2 else img[:3]
        raise ValueError(f"ToRGB expects 1, 2, 3 or 4 channels (channel-first), got shape {tuple(img.shape)}.")


class AdaptiveHistogramEqualize(Transform):
    """Contrast-limited adaptive histogram equalisation (CLAHE) of each channel of an image in ``[0, 1]``.

    MONAI has only the global ``HistogramNormalize``; this wraps scikit-image's ``equalize_adapthist`` (any number
    of spatial dims), channel by channel so that RGB stays 3 channels (the vessels' contrast is raised in each).
    Apply it to the **whole** image before any crop: the tiles then are the same at training and inference, so a
    patch-trained model still sees the input it would see on the whole image.

    Args:
        clip_limit: scikit-image's contrast limit in ``[0, 1]`` (higher: more contrast). Defaults to 0.01.
        kernel_size: tile size in pixels (an int or one per spatial dim); ``None`` = 1/8 of each side.
            Defaults to None.
        nbins: histogram bins. Defaults to 256.

    Raises:
        ValueError: when the image is not channel-first with 2 or 3 spatial dims, or holds NaN/inf values.

    Example:
        >>> img = torch.linspace(0.4, 0.6, 64 * 64).reshape(1, 64, 64)
        >>> out = AdaptiveHistogramEqualize()(img)
        >>> out.shape, bool(out.max() - out.min() > img.max() - img.min())
        (torch.Size([1, 64, 64]), True)
    """

    backend: ClassVar[list[TransformBackends]] = [TransformBackends.NUMPY]

    def __init__(self, clip_limit: float = 0.01, kernel_size: int | Sequence[int] | None = None, nbins: int = 256):
        if not 0.0 <= clip_limit <= 1.0:
            raise ValueError(f"clip_limit must be in [0, 1], got {clip_limit}.")
        self.clip_limit = clip_limit
        self.kernel_size = kernel_size
        self.nbins = nbins

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        from monai.utils import convert_to_dst_type
        from skimage.exposure import equalize_adapthist

        if img.ndim not in (3, 4):
            raise ValueError(f"expected a channel-first image (C, H, W[, D]), got shape {tuple(img.shape)}.")
        arr = np.asarray(img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else img, dtype=np.float64)
        if not np.isfinite(arr).all():
            raise ValueError("the image holds NaN or inf values; CLAHE needs a finite image in [0, 1].")
        out = np.stack(
            [
                equalize_adapthist(
                    np.clip(c, 0.0, 1.0), kernel_size=self.kernel_size, clip_limit=self.clip_limit, nbins=self.nbins
                )
                for c in arr
            ]
        )
        return convert_to_dst_type(out, img, dtype=img.dtype)[0]


class BicubicDownsample(Transform):
    r"""Downscale by ``scale`` with MATLAB's antialiased bicubic ``imresize`` (the SR degradation).

    See :mod:`monai_cnf.transforms.bicubic` for the kernel (Keys' cubic, a = -0.5, widened by ``scale``).
    Works on ``(C, *spatial)`` arrays with any number of spatial dims (separable filter). The output size is
    ``ceil(n / scale)``; crop the input to a multiple of ``scale`` first (:class:`DivisibleCrop`) for the
    standard protocol.

    Args:
        scale: the downscaling factor (2 halves each side). Defaults to 2.
        antialias: widen the kernel by ``scale`` (MATLAB's default). Defaults to True.
        quantize: clip to ``[0, max_value]`` and round, like ``imresize`` on ``uint8`` data. Defaults to False.
        max_value: upper clipping bound used by ``quantize``. Defaults to 255.
        divisor: the result is divided by it (255 maps 0..255 data to [0, 1]). Defaults to 1.

    Example:
        >>> hr = torch.full((3, 8, 8), 200.0)
        >>> lr = BicubicDownsample(scale=2, divisor=255.0)(hr)
        >>> tuple(lr.shape), round(lr[0, 0, 0].item() * 255.0, 3)
        ((3, 4, 4), 200.0)
    """

    def __init__(
        self,
        scale: float = 2,
        antialias: bool = True,
        quantize: bool = False,
        max_value: float = 255.0,
        divisor: float = 1.0,
    ) -> None:
        if not float(scale) > 0:
            raise ValueError(f"scale must be > 0 (2 halves each side), got {scale}.")
        if not float(divisor) > 0:
            raise ValueError(f"divisor must be > 0, got {divisor}.")
        self.scale = float(scale)
        self.antialias = bool(antialias)
        self.quantize = bool(quantize)
        self.max_value = float(max_value)
        self.divisor = float(divisor)

    def __call__(self, img: NdarrayOrTensor) -> torch.Tensor:
        t = convert_to_tensor(img, track_meta=False)
        if not torch.is_floating_point(t):
            t = t.to(torch.float32)
        out = bicubic_resize(torch.as_tensor(t), 1.0 / self.scale, antialias=self.antialias)
        if self.quantize:
            out = out.clamp(0.0, self.max_value).round()
        if self.divisor != 1.0:
            out = out / self.divisor
        if isinstance(img, MetaTensor):
            meta = dict(img.meta)
            spatial_dims = out.ndim - 1
            affine = img.affine.clone().to(torch.float64)
            # the voxel size grows by `scale`; keep the first voxel's corner where it was
            zoom = torch.eye(affine.shape[0], dtype=torch.float64)
            for d in range(spatial_dims):
                zoom[d, d] = self.scale
                zoom[d, -1] = (self.scale - 1.0) / 2.0
            meta["affine"] = affine @ zoom
            meta["spatial_shape"] = np.asarray(out.shape[1:])
            return MetaTensor(out, meta=meta)
        return out
