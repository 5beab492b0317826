"""Validation / evaluation for likelihood models: bits/dim plus sample-based metrics, as ignite metrics.

:class:`FlowEvaluator` is MONAI's ``SupervisedEvaluator`` whose iteration also computes bits/dim from
``network.bits_per_dim`` and carries extra batch keys (e.g. the DRIVE field-of-view ``"mask"``) into the output, so
the metrics below can read them with ``from_engine``. Every metric lands in ``evaluator.state.metrics`` where
MONAI's ``StatsHandler``/``MLFlowHandler`` and the CLI pick it up.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from ignite.metrics import Metric
from monai.engines import SupervisedEvaluator
from monai.handlers import from_engine
from monai.utils.enums import CommonKeys as Keys

__all__ = ["PSNRY", "SSIMY", "BitsPerDim", "FlowEvaluator", "MaxFScoreMetric", "crop_to_divisor"]


def _stack(values: Any) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.detach()
    return torch.stack([torch.as_tensor(v).detach() for v in values])


def _items(values: Any) -> list[torch.Tensor]:
    """Per-image tensors from either a batch tensor ``(B, ...)`` or a decollated list."""
    if isinstance(values, torch.Tensor):
        return [v for v in values.detach()]
    return [torch.as_tensor(v).detach() for v in values]


class FlowEvaluator(SupervisedEvaluator):
    """A :class:`~monai.engines.SupervisedEvaluator` for CNFs and factored baselines.

    Per iteration: ``"pred"`` = ``inferer(x, network)`` (use :class:`~monai_cnf.engines.SampleInferer` for the mean
    of N samples; a dict result also adds e.g. ``"std"``), ``"bpd"`` = ``network.bits_per_dim(y, x, mask=mask)``
    per image, and any of ``extra_keys`` present in the batch (e.g. ``"mask"``).

    What ``"bpd"`` counts: bits per **real** label element, i.e. those inside the batch's ``mask_key`` (DRIVE's FOV
    mask, padded with zeros along with the label, so padding never counts); without a mask, every element of the
    label as fed to the model. Exact for a factored model, a conservative bound for a CNF (see
    :func:`monai_cnf.metrics.bits_per_dim`). With ``paper_spatial_size`` the evaluator also reports
    ``"bpd_paper"``, the paper's protocol: the label and image zero-padded (centred) to that size and every element
    counted (1024x1024 for DRIVE).

    Super-resolution (the paper's Table 2 protocol): with ``crop_to_divisor`` a label whose size is not a multiple
    of the model's ``divisor`` (``2**L``) is scored on its largest top-left region that is (at most ``2**L - 1``
    rows/columns dropped; pair it with ``SampleInferer(pad_to_divisor=True)``, which pads instead, so PSNR/SSIM see
    the whole image); with ``bpd_crops_per_image = n`` the evaluator also reports ``"bpd_crops"``, each image's mean
    bits/dim over ``n`` random ``bpd_crop_size`` crops (uniform positions on the LR grid, a fixed seed per image),
    so :class:`BitsPerDim` over ``"bpd_crops"`` is the mean over all ``n x len(dataset)`` crops.

    Args:
        device: evaluation device.
        val_data_loader: loader of dict batches with ``"image"``, ``"label"`` (and ``extra_keys``).
        network: the model (``log_prob`` and ``sample``).
        compute_bpd: compute ``"bpd"``. Defaults to True.
        extra_keys: batch keys copied to the output. Defaults to ``("mask",)``.
        mask_key: batch key of the real-pixel mask for ``"bpd"``; None counts every label element.
            Defaults to ``"mask"``.
        paper_spatial_size: also compute ``"bpd_paper"`` over the label zero-padded to this size (e.g.
            ``(1024, 1024)``); None skips it. Defaults to None.
        crop_to_divisor: score ``"bpd"`` on the largest region divisible by the model's ``divisor``. Defaults to
            False (the model raises on such sizes).
        bpd_crops_per_image: random crops per image for ``"bpd_crops"``; 0 skips it. Defaults to 0.
        bpd_crop_size: the crops' label size (e.g. ``(128, 128)``). Defaults to None.
        bpd_crop_seed: seed of the crop positions (image ``i`` uses ``seed + i``). Defaults to 0.
        kwargs: any other :class:`~monai.engines.SupervisedEvaluator` argument (``inferer``, ``key_val_metric``,
            ``additional_metrics``, ``val_handlers``, ``postprocessing``, ``epoch_length``, ...).

    Example:
        >>> # evaluator = FlowEvaluator("cpu", loader, model, inferer=SampleInferer(20, 1.0),
        >>> #                           key_val_metric={"val_bpd": BitsPerDim()})
    """

    def __init__(
        self,
        device: str | torch.device,
        val_data_loader: Any,
        network: torch.nn.Module,
        compute_bpd: bool = True,
        extra_keys: Sequence[str] = ("mask",),
        mask_key: str | None = "mask",
        paper_spatial_size: Sequence[int] | None = None,
        crop_to_divisor: bool = False,
        bpd_crops_per_image: int = 0,
        bpd_crop_size: Sequence[int] | None = None,
        bpd_crop_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(device=torch.device(device), val_data_loader=val_data_loader, network=network, **kwargs)
        self.compute_bpd = bool(compute_bpd)
        self.extra_keys = tuple(extra_keys)
        self.mask_key = mask_key
        self.paper_spatial_size = None if paper_spatial_size is None else tuple(int(s) for s in paper_spatial_size)
        self.crop_to_divisor = bool(crop_to_divisor)
        if int(bpd_crops_per_image) < 0 or (int(bpd_crops_per_image) > 0 and not bpd_crop_size):
            raise ValueError(
                f"`bpd_crops_per_image` must be >= 0 and needs `bpd_crop_size`, got {bpd_crops_per_image}, "
                f"{bpd_crop_size}."
            )
        self.bpd_crops_per_image = int(bpd_crops_per_image)
        self.bpd_crop_size = None if not bpd_crop_size else tuple(int(s) for s in bpd_crop_size)
        self.bpd_crop_seed = int(bpd_crop_seed)

    def _iteration(self, engine: FlowEvaluator, batchdata: dict[str, Any]) -> dict:  # type: ignore[override]
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        inputs, targets = batch[0], batch[1]
        engine.state.output = {Keys.IMAGE: inputs, Keys.LABEL: targets}
        with engine.mode(engine.network):
            if engine.amp:
                with torch.autocast("cuda", **engine.amp_kwargs):
                    pred = engine.inferer(inputs, engine.network)
            else:
                pred = engine.inferer(inputs, engine.network)
            if isinstance(pred, dict):
                engine.state.output.update({k: v for k, v in pred.items() if k != "pred"})
                pred = pred["pred"]
            engine.state.output[Keys.PRED] = pred
            if engine.compute_bpd and targets is not None:
                mask = batchdata.get(engine.mask_key) if engine.mask_key and isinstance(batchdata, dict) else None
                mask = None if mask is None else torch.as_tensor(mask).to(engine.state.device)
                with torch.no_grad():
                    y, x = (
                        (targets, inputs)
                        if not engine.crop_to_divisor
                        else crop_to_divisor(targets, inputs, engine.network)
                    )
                    if mask is not None and y.shape != targets.shape:
                        mask = mask[(..., *(slice(0, n) for n in y.shape[2:]))]
                    engine.state.output["bpd"] = engine.network.bits_per_dim(y, x, mask=mask).float()
                    if engine.bpd_crops_per_image:
                        seed = engine.bpd_crop_seed + engine.state.iteration - 1
                        engine.state.output["bpd_crops"] = _random_crop_bpd(
                            engine.network, targets, inputs, engine.bpd_crop_size, engine.bpd_crops_per_image, seed
                        )
                    if engine.paper_spatial_size is not None:
                        y, x = (
                            _centre_pad(targets, engine.paper_spatial_size),
                            _centre_pad(inputs, engine.paper_spatial_size),
                        )
                        engine.state.output["bpd_paper"] = engine.network.bits_per_dim(y, x).float()
        for key in engine.extra_keys:
            if isinstance(batchdata, dict) and key in batchdata:
                value = batchdata[key]
                engine.state.output[key] = value.to(engine.state.device) if hasattr(value, "to") else value
        return engine.state.output


def crop_to_divisor(y: torch.Tensor, x: torch.Tensor, network: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The largest top-left region of ``y`` divisible by the model's ``divisor`` (and ``scale``), and the matching
    ``x``: what whole-image bits/dim count when the flow cannot take the whole image.

    Example:
        >>> class Flow: scale, divisor = 2, 4
        >>> y, x = crop_to_divisor(torch.zeros(1, 3, 10, 14), torch.zeros(1, 3, 5, 7), Flow())
        >>> tuple(y.shape), tuple(x.shape)
        ((1, 3, 8, 12), (1, 3, 4, 6))
    """
    scale, divisor = int(getattr(network, "scale", 1)), int(getattr(network, "divisor", 1))
    step = divisor * scale // math.gcd(divisor, scale)  # a multiple of the divisor and of the scale
    keep = [n - n % step for n in y.shape[2:]]
    if any(k == 0 for k in keep):
        raise ValueError(f"label of size {tuple(y.shape[2:])} is smaller than the model's divisor {step}.")
    y = y[(slice(None), slice(None), *(slice(0, k) for k in keep))]
    x = x[(slice(None), slice(None), *(slice(0, k // scale) for k in keep))]
    return y, x


def _random_crop_bpd(
    network: Any, y: torch.Tensor, x: torch.Tensor, size: Sequence[int], count: int, seed: int, chunk: int = 16
) -> torch.Tensor:
    """Per image, the mean bits/dim of ``count`` random ``size`` crops of ``y`` (and the matching ``x``): ``(B,)``.

    Crop corners are uniform on the LR grid (``x``), so label and image crops stay aligned; a fixed seed per call.
    """
    scale = int(getattr(network, "scale", 1))
    if len(size) != y.ndim - 2 or any(s % scale or s > n for s, n in zip(size, y.shape[2:], strict=True)):
        raise ValueError(
            f"`bpd_crop_size` {tuple(size)} must be a multiple of the scale {scale} and fit in the label "
            f"{tuple(y.shape[2:])}; lower it or skip the smaller images."
        )
    gen = torch.Generator().manual_seed(int(seed))
    lr = [s // scale for s in size]
    out = []
    for b in range(y.shape[0]):
        corners = [torch.randint(0, n - s + 1, (count,), generator=gen) for n, s in zip(x.shape[2:], lr, strict=True)]
        boxes = [[int(c[i]) for c in corners] for i in range(count)]  # LR corner of each crop
        values = []
        for first in range(0, count, chunk):
            group = boxes[first : first + chunk]
            xs = torch.stack([x[b][(slice(None), *_box(c, lr, 1))] for c in group])
            ys = torch.stack([y[b][(slice(None), *_box(c, size, scale))] for c in group])
            values.append(network.bits_per_dim(ys, xs).float())
        out.append(torch.cat(values).mean())
    return torch.stack(out)


def _box(corner: Sequence[int], size: Sequence[int], scale: int) -> tuple[slice, ...]:
    return tuple(slice(scale * c, scale * c + s) for c, s in zip(corner, size, strict=True))


def _centre_pad(t: torch.Tensor, spatial_size: Sequence[int]) -> torch.Tensor:
    """Zero-pad ``(B, C, *spatial)`` to ``spatial_size``, centred as MONAI's ``SpatialPad(method="symmetric")``."""
    if len(spatial_size) != t.ndim - 2 or any(s < n for s, n in zip(spatial_size, t.shape[2:], strict=True)):
        raise ValueError(
            f"`paper_spatial_size` {tuple(spatial_size)} must be one size per spatial dim, each >= the image's "
            f"{tuple(t.shape[2:])}."
        )
    pad: list[int] = []
    for s, n in reversed(list(zip(spatial_size, t.shape[2:], strict=True))):
        pad += [(s - n) // 2, s - n - (s - n) // 2]
    out = torch.nn.functional.pad(t.as_tensor() if hasattr(t, "as_tensor") else t, pad)
    return out


class BitsPerDim(Metric):
    """Mean bits/dim over all evaluated images (reads ``"bpd"``, one value per image).

    Each image's value is its own bits per real element (see :class:`FlowEvaluator`), averaged over images.

    Args:
        output_transform: maps the engine output to the per-image bpd values. Defaults to
            ``from_engine(["bpd"])``; use ``from_engine(["bpd_paper"])`` for the paper's protocol.
    """

    #: how :class:`~monai_cnf.engines.GatheredMetric` reduces the state over ranks (sharded validation)
    distributed_state: ClassVar[dict[str, str]] = {"_sum": "sum", "_count": "sum"}

    def __init__(self, output_transform: Callable = from_engine(["bpd"]), device: Any = "cpu") -> None:
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self._sum = 0.0
        self._count = 0

    def update(self, output: Any) -> None:
        values = _stack(output[0] if isinstance(output, tuple) else output).reshape(-1).double()
        self._sum += float(values.sum())
        self._count += values.numel()

    def compute(self) -> float:
        return self._sum / self._count if self._count else math.nan


class MaxFScoreMetric(Metric):
    """Max F-score over thresholds of the pooled PR curve of the predicted mean map, inside the mask (FOV).

    All pixels of all images inside the mask are pooled (the DRIVE convention in DESIGN.md); the curve and its max
    come from :func:`monai_cnf.metrics.max_f_score`.

    Args:
        output_transform: gives ``(pred, label, mask)`` or ``(pred, label)``; pred is the mean map in [0, 1].
            Defaults to ``from_engine(["pred", "label", "mask"])`` (a missing mask means the whole image).
    """

    distributed_state: ClassVar[dict[str, str]] = {"_scores": "cat", "_labels": "cat"}

    def __init__(self, output_transform: Callable | None = None, device: Any = "cpu") -> None:
        super().__init__(output_transform=output_transform or _pred_label_mask, device=device)

    def reset(self) -> None:
        self._scores: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    def update(self, output: Any) -> None:
        preds, labels = _items(output[0]), _items(output[1])
        masks = _items(output[2]) if len(output) > 2 and output[2] is not None else [None] * len(preds)
        for p, y, m in zip(preds, labels, masks, strict=True):
            keep = torch.ones_like(y, dtype=torch.bool) if m is None else (m > 0.5).expand_as(y)
            self._scores.append(p.float().cpu()[keep.cpu()])
            self._labels.append((y.cpu() > 0.5)[keep.cpu()])

    def compute(self) -> float:
        from monai_cnf.metrics import max_f_score

        if not self._scores:
            return math.nan
        return float(max_f_score(torch.cat(self._scores).numpy(), torch.cat(self._labels).numpy()).f_score)


def _pred_label_mask(output: Any) -> tuple:
    keys = ("pred", "label", "mask")
    if isinstance(output, dict):
        return tuple(output.get(k) for k in keys)
    return tuple([o.get(k) for o in output] if output[0].get(k) is not None else None for k in keys)


class _ImageMetric(Metric):
    """Mean over images of a per-image metric ``fn(pred, label) -> float`` (8-bit RGB tensors ``(C, *spatial)``)."""

    fn_name = ""
    distributed_state: ClassVar[dict[str, str]] = {"_sum": "sum", "_count": "sum"}

    def __init__(self, output_transform: Callable = from_engine(["pred", "label"]), border: int = 2) -> None:
        self.border = int(border)
        super().__init__(output_transform=output_transform)

    def reset(self) -> None:
        self._sum = 0.0
        self._count = 0

    def update(self, output: Any) -> None:
        import monai_cnf.metrics as metrics

        fn = getattr(metrics, self.fn_name)
        for p, y in zip(_items(output[0]), _items(output[1]), strict=True):
            value = fn(p.unsqueeze(0).float().cpu(), y.unsqueeze(0).float().cpu(), crop_border=self.border)
            self._sum += float(torch.as_tensor(value).reshape(-1)[0])
            self._count += 1

    def compute(self) -> float:
        return self._sum / self._count if self._count else math.nan


class PSNRY(_ImageMetric):
    """Mean PSNR on the Y channel (BT.601) over images, border crop ``border`` (= scale), via ``psnr_y``."""

    fn_name = "psnr_y"


class SSIMY(_ImageMetric):
    """Mean SSIM on the Y channel (BT.601) over images, border crop ``border`` (= scale), via ``ssim_y``."""

    fn_name = "ssim_y"
