"""Run trained models on a data split and feed their samples to the calibration analysis.

This is the library side of ``cnf calibrate``: given networks (a CNF and its factored baseline, already built and
loaded) and a datalist, it pads each image the way the bundle does, draws ``N`` samples per image in memory-bounded
chunks, undoes the padding with MONAI's own inverse of the pad transform, computes each model's bits/dim, and streams
:class:`~monai_cnf.calibration.SegmentationCase` (or :class:`~monai_cnf.calibration.SuperResolutionCase`) objects
into :func:`~monai_cnf.calibration.analyse_segmentation` (or :func:`~monai_cnf.calibration.analyse_super_resolution`).

How each model is sampled:

- a model without closed-form moments (the CNF): ``network.sample(x, num_samples=k, temperature=tau,
  chunk_size=k)`` ``chunk_size`` samples at a time, each chunk moved to the CPU as booleans, so device memory is
  bounded by one chunk and host memory by ``S x H x W`` bytes;
- a model with closed-form moments at temperature 1 (``exact_moments``: the factored Bernoulli): its exact soft
  map, and ``S`` independent Bernoulli draws of it (:func:`~monai_cnf.calibration.bernoulli_samples`), the paper's
  Fig. 6 treatment.

Bits/dim: ``-log p(y | x) / (D ln 2)`` of the label as fed to the model (:func:`monai_cnf.metrics.bits_per_dim`);
a flow models the whole padded array jointly, so ``D`` counts the padded label elements for both models (the same
convention as the bundles' evaluators), and for the CNF the value is the dequantization bound (an upper bound).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from monai_cnf.calibration.analysis import CalibrationReport, analyse_segmentation, analyse_super_resolution
from monai_cnf.calibration.cases import SegmentationCase, SuperResolutionCase, bernoulli_samples, check_model_name

if TYPE_CHECKING:
    from rich.progress import Progress

__all__ = [
    "SR_TEMPERATURES",
    "calibrate_segmentation",
    "calibrate_super_resolution",
    "draw_samples",
    "has_soft_map",
    "segmentation_cases",
    "super_resolution_cases",
]

logger = logging.getLogger(__name__)

#: The paper's SR temperature sweep (Figs. 3, 7-9).
SR_TEMPERATURES = (0.0, 0.5, 0.8, 1.0)
#: DRIVE keys: the image, the reference (1st observer), the field of view, the 2nd observer (test split).
_SEG_KEYS = ("image", "label", "mask", "label2")


def has_soft_map(network: Any) -> bool:
    """Whether a model knows the mean of its samples at temperature 1 exactly (the factored Bernoulli does).

    Example:
        >>> from monai_cnf.networks.base import ConditionalLikelihoodModel
        >>> has_soft_map(ConditionalLikelihoodModel())
        False
    """
    return bool(network.has_exact_moments(1.0))


def draw_samples(
    network: Any,
    x: torch.Tensor,
    num_samples: int,
    temperature: float = 1.0,
    chunk_size: int = 4,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.bool,
    on_chunk: Callable[[int], None] | None = None,
    roi_size: Sequence[int] | None = None,
    overlap: float = 0.25,
    sw_batch_size: int = 1,
    pad_to_divisor: bool = False,
) -> torch.Tensor:
    """Draw ``num_samples`` samples of ``p(y | x)``, ``chunk_size`` per call, gathered on the CPU.

    Only one chunk lives on ``x``'s device at a time; each is converted to ``dtype`` on the CPU (``torch.bool`` for
    binary labels: one byte per pixel, so 100 samples of a DRIVE image take 33 MB). MONAI's / our
    :class:`~monai_cnf.engines.SampleInferer` reduces samples to moments on the device; the calibration analysis
    needs every sample (per-sample PR points, GED, HM-IoU), hence this gatherer.

    With the same seeded ``generator``, the samples do not depend on ``chunk_size`` for models that draw their noise
    sample by sample (as :class:`~monai_cnf.networks.ConditionalNormalizingFlow` does).

    Args:
        network: a :class:`~monai_cnf.networks.base.ConditionalLikelihoodModel`.
        x: condition ``(B, C_in, *spatial)``.
        num_samples: S.
        temperature: sampling temperature tau. Defaults to 1.0.
        chunk_size: samples per call. Defaults to 4.
        generator: random generator (on ``x``'s device). Defaults to None.
        dtype: dtype of the returned samples. Defaults to ``torch.bool``.
        on_chunk: called with the number of samples after each chunk (e.g. a progress bar). Defaults to None.
        roi_size: sample in sliding windows of this size (the bundle's ``roi_size``; each chunk goes through
            :class:`~monai_cnf.engines.SampleInferer`, which stitches binary samples by a weighted vote in the
            overlaps); None samples the whole image. Defaults to None.
        overlap: sliding-window overlap. Defaults to 0.25.
        sw_batch_size: windows per batch. Defaults to 1.
        pad_to_divisor: edge-pad ``x`` so the target fits the model and crop the samples back (see
            :class:`~monai_cnf.engines.SampleInferer`). Defaults to False.

    Returns:
        ``(S, B, C, *spatial)`` tensor on the CPU.

    Example:
        >>> from monai_cnf.networks.base import ConditionalLikelihoodModel
        >>> class Coin(ConditionalLikelihoodModel):
        ...     def sample(self, x, num_samples=1, temperature=1.0, generator=None, chunk_size=None):
        ...         return (torch.rand(num_samples, *x.shape, generator=generator) < 0.5).float()
        >>> draw_samples(Coin(), torch.zeros(1, 1, 4, 4), num_samples=5, chunk_size=2).shape
        torch.Size([5, 1, 1, 4, 4])
    """
    if int(num_samples) < 1:
        raise ValueError(f"`num_samples` must be >= 1, got {num_samples}.")
    if int(chunk_size) < 1:
        raise ValueError(f"`chunk_size` must be >= 1, got {chunk_size}; use e.g. 4 (more is faster, needs memory).")
    if float(temperature) < 0:
        raise ValueError(f"`temperature` must be >= 0, got {temperature}.")
    from monai_cnf.networks.base import ConditionalLikelihoodModel

    if not isinstance(network, ConditionalLikelihoodModel):
        raise ValueError(f"`network` must be a ConditionalLikelihoodModel with sample(), got {type(network).__name__}.")
    chunks: list[torch.Tensor] = []
    done = 0
    with torch.no_grad():
        while done < int(num_samples):
            k = min(int(chunk_size), int(num_samples) - done)
            if roi_size is not None or pad_to_divisor:
                from monai_cnf.engines import SampleInferer

                windowed = SampleInferer(
                    k, float(temperature), chunk_size=k, return_samples=True, roi_size=roi_size, overlap=overlap,
                    sw_batch_size=sw_batch_size, generator=generator, exact_mean=False, pad_to_divisor=pad_to_divisor,
                )  # fmt: skip
                s = windowed(x, network)["samples"]
            else:
                s = network.sample(x, num_samples=k, temperature=float(temperature), generator=generator, chunk_size=k)
            if s.dim() != x.dim() + 1 or s.shape[0] != k or s.shape[1] != x.shape[0]:
                raise ValueError(
                    f"network.sample must return (S, B, C, *spatial) with S={k}, B={x.shape[0]}; got {tuple(s.shape)}."
                )
            chunks.append(s.detach().to("cpu", dtype))
            done += k
            if on_chunk is not None:
                on_chunk(k)
    return torch.cat(chunks, 0)


def _windowed(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    roi_size: Sequence[int] | None,
    overlap: float,
    sw_batch_size: int,
) -> torch.Tensor:
    """``fn(x)``, or MONAI's sliding-window inference of it when ``roi_size`` is set and smaller than ``x``."""
    if roi_size is None or all(s <= r for s, r in zip(x.shape[2:], roi_size, strict=False)):
        return fn(x)
    from monai.inferers import sliding_window_inference

    out = sliding_window_inference(x, roi_size, sw_batch_size, fn, overlap=overlap, mode="gaussian")
    return out.as_tensor() if hasattr(out, "as_tensor") else out


def _divisor(models: Mapping[str, Any]) -> int:
    out = 1
    for net in models.values():
        out = math.lcm(out, int(getattr(net, "divisor", 1)))
    return out


def _default_pad(models: Mapping[str, Any]) -> Any:
    from monai.transforms import DivisiblePadd

    return DivisiblePadd(keys=["image", "label", "mask"], k=_divisor(models), allow_missing_keys=True)


def _load_segmentation_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """Load a datalist item of file paths with :func:`monai_cnf.data.drive_load_transforms` (already-loaded
    tensors pass through)."""
    keys = [k for k in _SEG_KEYS if k in item]
    if "image" not in keys or "label" not in keys:
        raise ValueError(f"each datalist item needs 'image' and 'label' (and optionally 'mask', 'label2'), got {keys}.")
    if all(isinstance(item[k], (str, Path)) for k in keys):
        from monai.transforms import Compose

        from monai_cnf.data import drive_load_transforms

        return Compose(drive_load_transforms(keys))({k: str(item[k]) for k in keys})
    from monai.data import MetaTensor

    return {k: item[k] if isinstance(item[k], MetaTensor) else MetaTensor(torch.as_tensor(item[k])) for k in keys}


def _as_batch(image: Any, device: torch.device) -> torch.Tensor:
    """A padded ``(C, *spatial)`` image (MetaTensor or tensor) -> a plain float ``(1, C, *spatial)`` on ``device``."""
    return (image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image))[None].float().to(device)


def _item_name(item: Mapping[str, Any], index: int) -> str:
    if isinstance(item.get("image"), (str, Path)):
        stem = Path(item["image"]).name
        return stem.split(".")[0]
    return str(item.get("name", index))


def _unpad(t: torch.Tensor, padded_image: Any, pad: Any) -> torch.Tensor:
    """Crop ``t`` ``(K, *padded_spatial)`` back to the original geometry with MONAI's inverse of ``pad``.

    The inverse is replayed from the padded image's ``applied_operations`` (what ``Invertd`` does), so any MONAI pad
    (``DivisiblePadd``, ``SpatialPadd``, symmetric or not) is undone exactly.
    """
    from monai.data import MetaTensor

    meta = MetaTensor(
        t,
        meta=copy.deepcopy(padded_image.meta),
        applied_operations=copy.deepcopy(padded_image.applied_operations),
    )
    out = pad.inverse({"image": meta})["image"]
    return out.as_tensor() if isinstance(out, MetaTensor) else torch.as_tensor(out)


def _progress_tasks(progress: Progress | None, num_images: int | None, per_image: int) -> tuple[Any, Any]:
    if progress is None:
        return None, None
    images = progress.add_task("images", total=num_images)
    samples = progress.add_task("samples", total=per_image)
    return images, samples


def segmentation_cases(
    datalist: Iterable[Mapping[str, Any]],
    models: Mapping[str, torch.nn.Module],
    num_samples: int = 100,
    temperature: float = 1.0,
    chunk_size: int = 4,
    pad: Any | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: Progress | None = None,
    roi_size: Sequence[int] | Mapping[str, Sequence[int] | None] | None = None,
    overlap: float = 0.25,
    sw_batch_size: int = 1,
    input_transforms: Mapping[str, Callable[[Any], Any] | None] | None = None,
) -> Iterator[SegmentationCase]:
    """Yield one :class:`~monai_cnf.calibration.SegmentationCase` per datalist item, sampling lazily.

    Per image: load (``image`` in [0, 1], binary ``label``, ``mask``, ``label2``), pad ``image``/``label``/``mask``
    with ``pad``, then per model draw ``num_samples`` samples (CNF: chunked ``sample`` at ``temperature``; factored
    Bernoulli: its exact soft map and independent Bernoulli draws of it), compute bits/dim on the padded pair, and
    crop samples and soft maps back to the image's own size. ``observers`` = ``[label, label2]`` (``label2`` when
    present).

    Args:
        datalist: items ``{"image", "label"[, "mask"][, "label2"]}`` of file paths (DRIVE layout, loaded with
            :func:`monai_cnf.data.drive_load_transforms`) or of channel-first tensors.
        models: model name -> network in eval mode on ``device`` (e.g. ``{"cnf": ..., "factored": ...}``).
        num_samples: samples per image and model. Defaults to 100.
        temperature: temperature of the CNF samples (a factored model is sampled from its soft map). Defaults to 1.0.
        chunk_size: CNF samples per call. Defaults to 4.
        pad: MONAI dictionary pad transform over ``image``/``label``/``mask`` (the bundle's ``pad_transform``);
            None pads to a multiple of the models' ``divisor`` with ``DivisiblePadd``. Defaults to None.
        device: device of the models. Defaults to "cpu".
        seed: seed of the CNF's generator and of the Bernoulli draws. Defaults to 0.
        progress: a ``rich.progress.Progress`` to report images and samples on. Defaults to None.
        roi_size: sample (CNF) and compute soft maps (factored) in sliding windows of this size, as the bundle's
            inferer does (the DRIVE CPU preset's CNF: 96 x 96), or a mapping model name -> size (None, or a name
            left out: whole images); None uses whole images. Defaults to None.
        overlap: sliding-window overlap. Defaults to 0.25.
        sw_batch_size: windows per batch. Defaults to 1.
        input_transforms: model name -> a transform of the loaded whole image (``(3, H, W)`` in [0, 1]) applied
            before padding, for a model trained on preprocessed images (``equalize_contrast``: CLAHE); a name left
            out sees the image as loaded. Defaults to None.

    Yields:
        :class:`~monai_cnf.calibration.SegmentationCase` with ``samples``, ``prob_maps`` (factored) and
        ``bits_per_dim`` per model.
    """
    if not models:
        raise ValueError("`models` must map at least one name to a network, e.g. {'cnf': model}.")
    for name in models:
        check_model_name(name)
    if int(num_samples) < 1:
        raise ValueError(f"`num_samples` must be >= 1, got {num_samples}.")

    device = torch.device(device)
    pad = pad if pad is not None else _default_pad(models)
    items = list(datalist)
    rng = np.random.default_rng(seed)
    generator = torch.Generator(device=device).manual_seed(int(seed))
    t_images, t_samples = _progress_tasks(progress, len(items), int(num_samples) * len(models))
    for index, item in enumerate(items):
        data = _load_segmentation_item(item)
        padded = pad({k: data[k] for k in ("image", "label", "mask") if k in data})
        image = padded["image"]
        x_loaded = _as_batch(image, device)
        y = torch.as_tensor(padded["label"])[None].float().to(device)
        fov = torch.as_tensor(padded["mask"])[None].float().to(device) if "mask" in padded else None
        samples: dict[str, np.ndarray] = {}
        prob_maps: dict[str, np.ndarray] = {}
        bpd: dict[str, float] = {}
        if progress is not None:
            progress.reset(t_samples, total=int(num_samples) * len(models))

        def advance(n: int) -> None:
            if progress is not None:
                progress.advance(t_samples, n)

        for name, net in models.items():
            roi = roi_size.get(name) if isinstance(roi_size, Mapping) else roi_size
            x = x_loaded
            transform = (input_transforms or {}).get(name)
            if transform is not None:
                x = _as_batch(pad({"image": transform(data["image"])})["image"], device)
            with torch.no_grad():
                # bits per real pixel: inside the (zero-padded) FOV mask, see monai_cnf.metrics.bits_per_dim
                bpd[name] = float(net.bits_per_dim(y, x, mask=fov)[0])
                if has_soft_map(net):
                    soft = _windowed(lambda t, net=net: net.exact_moments(t, 1.0)[0], x, roi, overlap, sw_batch_size)
                    prob = _unpad(soft[0].float().cpu(), image, pad)  # (C, H, W)
                    prob_maps[name] = prob[0].numpy()
                    samples[name] = bernoulli_samples(prob_maps[name], int(num_samples), rng)
                    advance(int(num_samples))
                else:
                    s = draw_samples(
                        net, x, int(num_samples), temperature, chunk_size, generator, on_chunk=advance,
                        roi_size=roi, overlap=overlap, sw_batch_size=sw_batch_size,
                    )  # fmt: skip
                    s = s[:, 0]  # (S, C, *spatial)
                    flat = _unpad(s.reshape(-1, *s.shape[2:]), image, pad)  # samples x channels as channels
                    samples[name] = flat.reshape(s.shape[0], s.shape[1], *flat.shape[1:])[:, 0].numpy()
        observers = [data["label"]] + ([data["label2"]] if "label2" in data else [])
        yield SegmentationCase(
            image=torch.as_tensor(data["image"]).float().clamp(0, 1),
            observers=[torch.as_tensor(o) for o in observers],
            samples=samples,
            mask=torch.as_tensor(data["mask"]) if "mask" in data else None,
            prob_maps=prob_maps,
            bits_per_dim=bpd,
            name=_item_name(item, index),
        )
        if progress is not None:
            progress.advance(t_images, 1)


def calibrate_segmentation(
    datalist: Iterable[Mapping[str, Any]],
    models: Mapping[str, torch.nn.Module],
    out_dir: str | Path,
    num_samples: int = 100,
    temperature: float = 1.0,
    chunk_size: int = 4,
    pad: Any | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: Progress | None = None,
    roi_size: Sequence[int] | Mapping[str, Sequence[int] | None] | None = None,
    overlap: float = 0.25,
    sw_batch_size: int = 1,
    input_transforms: Mapping[str, Callable[[Any], Any] | None] | None = None,
    **analysis_kwargs: Any,
) -> CalibrationReport:
    """Sample every model on every image and run :func:`~monai_cnf.calibration.analyse_segmentation`.

    Arguments as :func:`segmentation_cases`, plus ``out_dir`` (PNG folder) and ``analysis_kwargs`` for
    :func:`~monai_cnf.calibration.analyse_segmentation` (``num_bins``, ``num_grid_images``, ``num_grid_samples``,
    ``grid_crop``). The report's metrics include ``<model>/bits_per_dim`` for every model.

    Example:
        >>> import tempfile
        >>> from monai_cnf.networks import FactoredBaseline
        >>> net = FactoredBaseline(spatial_dims=2, in_channels=3, out_channels=1, num_levels=1,
        ...     hidden_channels=4, conditioner_kwargs={"feature_channels": (4,)}).eval()
        >>> y = torch.zeros(1, 8, 8); y[:, 2:6, 3] = 1
        >>> report = calibrate_segmentation([{"image": torch.rand(3, 8, 8), "label": y}], {"factored": net},
        ...                                 tempfile.mkdtemp(), num_samples=3)
        >>> 0.0 <= report.metrics["factored/max_f"] <= 1.0, report.metrics["factored/bits_per_dim"] > 0
        (True, True)
    """
    cases = segmentation_cases(
        datalist, models, num_samples, temperature, chunk_size, pad, device, seed, progress,
        roi_size=roi_size, overlap=overlap, sw_batch_size=sw_batch_size, input_transforms=input_transforms,
    )  # fmt: skip
    return analyse_segmentation(cases, out_dir, **analysis_kwargs)


def super_resolution_cases(
    items: Iterable[Mapping[str, Any]],
    models: Mapping[str, torch.nn.Module],
    temperatures: Sequence[float] = SR_TEMPERATURES,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: Progress | None = None,
) -> Iterator[SuperResolutionCase]:
    """Yield one :class:`~monai_cnf.calibration.SuperResolutionCase` per item: one sample per temperature per model.

    Args:
        items: preprocessed pairs ``{"image": LR (3, h, w) in [0, 1], "label": HR (3, H, W) in 0..255}`` (the SR
            bundle's dataset items). Sizes the flow cannot take are handled as ``cnf evaluate`` does: the LR image
            is edge-padded for sampling and the samples cropped back; bits/dim count the region divisible by 2^L.
        models: model name -> network (``sample`` and ``log_prob``) in eval mode on ``device``.
        temperatures: the sweep; 0 is the deterministic prediction. Defaults to ``(0, 0.5, 0.8, 1.0)``.
        device: device of the models. Defaults to "cpu".
        seed: seed of the sampling generator. Defaults to 0.
        progress: a ``rich.progress.Progress``. Defaults to None.
    """

    from monai_cnf.engines.evaluator import crop_to_divisor

    if not models:
        raise ValueError("`models` must map at least one name to a network.")
    taus = [float(t) for t in temperatures]
    if not taus or min(taus) < 0:
        raise ValueError(f"`temperatures` must be a non-empty list of values >= 0, got {temperatures}.")
    device = torch.device(device)
    generator = torch.Generator(device=device).manual_seed(int(seed))
    items = list(items)
    t_images, t_samples = _progress_tasks(progress, len(items), len(taus) * len(models))
    for index, item in enumerate(items):
        lr = torch.as_tensor(item["image"]).float()
        hr = torch.as_tensor(item["label"]).float()
        x, y = lr[None].to(device), hr[None].to(device)
        preds: dict[str, dict[float, np.ndarray]] = {}
        bpd: dict[str, float] = {}
        if progress is not None:
            progress.reset(t_samples, total=len(taus) * len(models))
        for name, net in models.items():
            with torch.no_grad():
                bpd[name] = float(net.bits_per_dim(*crop_to_divisor(y, x, net))[0])
                preds[name] = {}
                for tau in taus:
                    gen = generator if tau > 0 else None
                    s = draw_samples(net, x, 1, tau, 1, gen, dtype=torch.float32, pad_to_divisor=True)
                    preds[name][tau] = s[0, 0].clamp(0, 255).numpy()
                    if progress is not None:
                        progress.advance(t_samples, 1)
        name = item.get("name") or (Path(item["image"]).stem if isinstance(item.get("image"), str) else str(index))
        yield SuperResolutionCase(lr.clamp(0, 1).numpy(), hr.numpy(), preds, bpd, str(name))
        if progress is not None:
            progress.advance(t_images, 1)


def calibrate_super_resolution(
    items: Iterable[Mapping[str, Any]],
    models: Mapping[str, torch.nn.Module],
    out_dir: str | Path,
    temperatures: Sequence[float] = SR_TEMPERATURES,
    scale: int = 2,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: Progress | None = None,
    num_grid_images: int = 2,
) -> CalibrationReport:
    """Temperature sweep of SR models: :func:`super_resolution_cases` into
    :func:`~monai_cnf.calibration.analyse_super_resolution` (PSNR/SSIM on Y per temperature, bits/dim, grids).

    Args:
        items: see :func:`super_resolution_cases`.
        models: see :func:`super_resolution_cases`.
        out_dir: PNG folder.
        temperatures: the sweep. Defaults to ``(0, 0.5, 0.8, 1.0)``.
        scale: SR factor = border crop. Defaults to 2.
        device: device of the models. Defaults to "cpu".
        seed: sampling seed. Defaults to 0.
        progress: a ``rich.progress.Progress``. Defaults to None.
        num_grid_images: images that get a sweep grid. Defaults to 2.
    """
    cases = super_resolution_cases(items, models, temperatures, device, seed, progress)
    return analyse_super_resolution(cases, out_dir, scale=scale, num_grid_images=num_grid_images)
