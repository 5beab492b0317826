"""SampleInferer: a MONAI ``Inferer`` that summarises N samples of p(y | x) drawn in memory-bounded chunks."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from monai.inferers import Inferer

__all__ = ["SampleInferer", "sliding_window_settings", "window_tiles"]


class SampleInferer(Inferer):
    """Draw ``num_samples`` samples of ``p(y | x)`` at temperature ``tau`` and return their mean (and std/samples).

    The model is a :class:`~monai_cnf.networks.base.ConditionalLikelihoodModel` (``ConditionalNormalizingFlow``,
    ``FactoredBaseline``): ``sample(x, num_samples, temperature, generator, chunk_size) -> (S, B, C, *spatial)``.
    Samples are drawn ``chunk_size`` at a time and reduced on the fly (running sum and sum of squares in float64),
    so memory does not grow with ``num_samples`` unless ``return_samples`` is set. For binary labels the mean is the
    per-pixel vessel frequency; for 8-bit targets it is the mean intensity in [0, 255].

    For images larger than ``roi_size`` the sampling runs window by window (for images too large for memory; a
    model that is the same at every size, see DESIGN.md, should sample whole images). Windowed samples are an
    **approximation** of samples of the whole image: every output pixel takes its value from exactly one window's
    sample (the window whose centre is nearest, see :func:`window_tiles`), never from an average of windows, so
    each pixel's marginal is the model's marginal given that window, but pixels of different tiles are drawn
    independently. The mean and std are the moments of these stitched samples. ``roi_size`` must be divisible by
    ``2**num_levels``.

    Args:
        num_samples: N, number of samples. Defaults to 20.
        temperature: tau, the prior's temperature (0 gives the mode-like deterministic decode). Defaults to 1.0.
        chunk_size: samples drawn per call. Defaults to 4.
        return_std: also return the per-pixel standard deviation. Defaults to False.
        return_samples: also return the ``(S, B, C, *spatial)`` samples. Defaults to False.
        roi_size: sliding-window size; None runs on the whole image. Defaults to None.
        sw_batch_size: windows per sliding-window batch. Defaults to 1.
        overlap: sliding-window overlap (windows overlap so that each tile is seen with context around it).
            Defaults to 0.25.
        generator: optional ``torch.Generator`` passed to ``sample``. Defaults to None.
        exact_mean: for a model with closed-form moments (``exact_moments``: the factored Bernoulli at temperature
            1), return them instead of Monte-Carlo estimates (samples, when requested, are still drawn).
            Defaults to True.
        pad_to_divisor: for an input whose target size (``x`` size times the model's ``scale``) is not a multiple
            of the model's ``divisor`` (``2**num_levels``), pad ``x`` at the end of each spatial axis (edge values,
            ``mode="replicate"``), sample the padded image and crop every output back to the target size (as the
            paper does for Set14/BSD100: pad right and bottom, score the original region). False raises the model's
            error instead. Defaults to False.
        progress: called with the fraction of the call's samples drawn so far (0 to 1, after every chunk and,
            with windows, every window batch), e.g. to drive a progress bar while one image is sampled.
            Defaults to None.

    Returns (from ``__call__``):
        the mean ``(B, C, *spatial)`` when neither ``return_std`` nor ``return_samples`` is set, else a dict with
        ``"pred"`` (mean) and ``"std"`` and/or ``"samples"``.

    Example:
        >>> from monai_cnf.networks.base import ConditionalLikelihoodModel
        >>> class Coin(ConditionalLikelihoodModel):
        ...     def sample(self, x, num_samples=1, temperature=1.0, generator=None, chunk_size=None):
        ...         return (torch.rand(num_samples, *x.shape) < 0.5).float()
        >>> mean = SampleInferer(num_samples=8, chunk_size=3)(torch.zeros(1, 1, 4, 4), Coin())
        >>> mean.shape
        torch.Size([1, 1, 4, 4])
    """

    def __init__(
        self,
        num_samples: int = 20,
        temperature: float = 1.0,
        chunk_size: int = 4,
        return_std: bool = False,
        return_samples: bool = False,
        roi_size: Sequence[int] | int | None = None,
        sw_batch_size: int = 1,
        overlap: float = 0.25,
        generator: torch.Generator | None = None,
        exact_mean: bool = True,
        pad_to_divisor: bool = False,
        progress: Callable[[float], None] | None = None,
    ) -> None:
        super().__init__()
        if int(num_samples) < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
        if float(temperature) < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}.")
        self.num_samples = int(num_samples)
        self.temperature = float(temperature)
        self.chunk_size = int(chunk_size)
        self.return_std = bool(return_std)
        self.return_samples = bool(return_samples)
        self.roi_size = roi_size
        self.sw_batch_size = int(sw_batch_size)
        self.overlap = float(overlap)
        self.generator = generator
        self.exact_mean = bool(exact_mean)
        self.pad_to_divisor = bool(pad_to_divisor)
        self.progress = progress
        self._span = (0.0, 1.0)  # the part of the call's work the current _moments covers (windows split it)

    def _draws(self, network: Any, x: torch.Tensor, n: int) -> Iterator[torch.Tensor]:
        """``n`` samples, ``chunk_size`` at a time, from ``network.sample_chunks`` (its condition pass runs once)."""
        chunks = network.sample_chunks(
            x, num_samples=n, temperature=self.temperature, generator=self.generator, chunk_size=self.chunk_size
        )
        for s in chunks:
            if s.dim() != x.dim() + 1 or not 1 <= s.shape[0] <= self.chunk_size or s.shape[1] != x.shape[0]:
                raise ValueError(
                    f"network.sample_chunks must yield (k, B, C, *spatial) with k <= chunk_size={self.chunk_size}, "
                    f"B={x.shape[0]}; got {tuple(s.shape)}."
                )
            yield s

    def _moments(self, x: torch.Tensor, network: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Mean, second moment and (optionally) the samples on one (window) batch."""
        total = torch.zeros((), dtype=torch.float64)
        sq = torch.zeros((), dtype=torch.float64)
        kept: list[torch.Tensor] = []
        # at temperature 0 every sample is the same decode: draw it once
        exact = self.exact_mean and network.has_exact_moments(self.temperature)
        moments = network.exact_moments(x, self.temperature) if exact else None
        n_draw = 1 if ((self.temperature == 0 or exact) and not self.return_samples) else self.num_samples
        done = 0
        for s in self._draws(network, x, n_draw):
            n = s.shape[0]
            s64 = s.detach().to(torch.float64)
            total = total + s64.sum(0)
            sq = sq + (s64 * s64).sum(0)
            if self.return_samples:
                kept.append(s.detach())
            done += n
            if self.progress is not None:
                lo, hi = self._span
                self.progress(lo + (hi - lo) * done / n_draw)
        if done != n_draw:
            raise ValueError(f"network.sample_chunks yielded {done} samples, {n_draw} were asked for.")
        mean = total / n_draw
        second = sq / n_draw
        samples = torch.cat(kept, 0) if kept else None
        if moments is not None:
            mean, second = (m.detach().to(torch.float64) for m in moments)
        return mean.to(x.dtype if x.is_floating_point() else torch.float32), second.to(mean.dtype), samples

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> Any:
        from monai_cnf.networks.base import ConditionalLikelihoodModel

        if not isinstance(network, ConditionalLikelihoodModel):
            raise ValueError(
                f"network must be a ConditionalLikelihoodModel with sample() (a CNF or factored baseline), got "
                f"{type(network).__name__}."
            )
        self._span = (0.0, 1.0)
        with torch.no_grad():
            padded, target = _pad_to_divisor(inputs, network) if self.pad_to_divisor else (inputs, None)
            if self.roi_size is None or _fits(padded, self.roi_size):
                mean, second, samples = self._moments(padded, network)
            else:
                mean, second, samples = self._sliding(padded, network)
        mean, second = _plain(mean), _plain(second)
        if target is not None:  # crop the padding off again
            crop = (slice(None), slice(None), *(slice(0, n) for n in target))
            mean, second = mean[crop], second[crop]
            samples = None if samples is None else samples[(slice(None), *crop)]
        if not (self.return_std or self.return_samples):
            return _like(mean, inputs)
        out: dict[str, torch.Tensor] = {"pred": _like(mean, inputs)}
        if self.return_std:
            std = (second.to(torch.float64) - mean.to(torch.float64) ** 2).clamp_min(0).sqrt().to(mean.dtype)
            out["std"] = _like(std, inputs)
        if self.return_samples and samples is not None:
            out["samples"] = samples
        return out

    def _sliding(self, inputs: torch.Tensor, network: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Sample window by window; every output pixel takes its values from exactly one window (see ``tiles``).

        MONAI's ``sliding_window_inference`` blends overlapping windows, which is right for a mean but wrong for a
        sample: an average of samples is not a sample, and rounding it back to labels biases the marginals in the
        overlaps (a binary pixel seen by two windows became 1 only if both said so). So the windows are cut into
        disjoint tiles, each pixel given to the window whose centre is nearest, and each tile is copied whole from
        its window's sample (its mean and second moment likewise, so ``pred`` stays the mean of the samples).
        """
        spatial = tuple(inputs.shape[2:])
        roi = _window_size(self.roi_size, spatial)
        windows = window_tiles(spatial, roi, self.overlap)
        mean = second = samples = None
        for first in range(0, len(windows), self.sw_batch_size):
            group = windows[first : first + self.sw_batch_size]
            crops = torch.cat([inputs[(slice(None), slice(None), *w)] for w, _ in group], dim=0)
            self._span = (first / len(windows), min(first + self.sw_batch_size, len(windows)) / len(windows))
            m, sq, s = self._moments(crops, network)
            m, sq = _plain(m), _plain(sq)
            s = None if s is None else _plain(s)
            if mean is None:  # allocate at the output's (target) size: scale = window output / window input
                scale = m.shape[2] // crops.shape[2]
                mean = m.new_zeros((inputs.shape[0], m.shape[1], *(n * scale for n in spatial)))
                second = torch.zeros_like(mean)
                if s is not None:
                    samples = s.new_zeros((s.shape[0], *mean.shape))
            b = inputs.shape[0]
            for i, (window, tile) in enumerate(group):
                own = tuple(slice(t.start - w.start, t.stop - w.start) for w, t in zip(window, tile, strict=True))
                out = (slice(None), slice(None), *(slice(t.start * scale, t.stop * scale) for t in tile))
                src = (slice(i * b, (i + 1) * b), slice(None), *(slice(o.start * scale, o.stop * scale) for o in own))
                mean[out] = m[src]
                second[out] = sq[src]
                if samples is not None and s is not None:
                    samples[(slice(None), *out)] = s[(slice(None), *src)]
        return mean, second, samples  # type: ignore[return-value]


def _window_size(roi_size: Sequence[int] | int, spatial: Sequence[int]) -> tuple[int, ...]:
    roi = [int(roi_size)] * len(spatial) if isinstance(roi_size, int) else [int(r) for r in roi_size]
    if len(roi) != len(spatial) or any(r < 1 for r in roi):
        raise ValueError(f"`roi_size` {roi_size} must give one positive size per spatial dim of {tuple(spatial)}.")
    return tuple(min(r, n) for r, n in zip(roi, spatial, strict=True))


def _starts(size: int, roi: int, overlap: float) -> list[int]:
    """Window starts along one axis: stride ``roi * (1 - overlap)``, the last window flush with the end."""
    if roi >= size:
        return [0]
    stride = max(1, int(roi * (1.0 - overlap)))
    starts = list(range(0, size - roi, stride))
    return [*starts, size - roi]


def window_tiles(
    spatial: Sequence[int], roi_size: Sequence[int], overlap: float = 0.25
) -> list[tuple[tuple[slice, ...], tuple[slice, ...]]]:
    """Sliding windows over ``spatial`` and the disjoint tile each one owns, as ``(window, tile)`` slice tuples.

    Windows are placed as MONAI's ``sliding_window_inference`` places them (stride ``roi * (1 - overlap)``, the last
    one flush with the end). Along each axis a pixel belongs to the window whose centre is nearest (ties go to
    the earlier window); since that window is at least as close as any window covering the pixel, it covers it
    too. So the tiles partition the image and each tile lies inside its window.

    Example:
        >>> [(w[0].start, w[0].stop, t[0].start, t[0].stop) for w, t in window_tiles([10], [6], overlap=0.5)]
        [(0, 6, 0, 5), (3, 9, 5, 7), (4, 10, 7, 10)]
    """
    if not 0.0 <= float(overlap) < 1.0:
        raise ValueError(f"`overlap` must be in [0, 1), got {overlap}.")
    per_axis = []
    for size, roi in zip(spatial, roi_size, strict=True):
        starts = _starts(int(size), int(roi), float(overlap))
        centres = [st + (roi - 1) / 2 for st in starts]
        # pixel i goes to window k iff it is nearest centre k (ties to the lower k): cut halfway between centres
        cuts = [0] + [int((a + b) // 2) + 1 for a, b in itertools.pairwise(centres)] + [int(size)]
        per_axis.append(
            [(slice(st, st + roi), slice(cuts[k], cuts[k + 1])) for k, st in enumerate(starts) if cuts[k + 1] > cuts[k]]
        )
    return [(tuple(a[0] for a in combo), tuple(a[1] for a in combo)) for combo in itertools.product(*per_axis)]


def _pad_to_divisor(inputs: torch.Tensor, network: Any) -> tuple[torch.Tensor, tuple[int, ...] | None]:
    """``inputs`` edge-padded at the end of each axis so its target fits the model, and the unpadded target size.

    Returns ``(inputs, None)`` when nothing needs padding.
    """
    scale, divisor = int(getattr(network, "scale", 1)), int(getattr(network, "divisor", 1))
    step = divisor // math.gcd(divisor, scale)  # x size multiple of this <=> target size multiple of divisor
    spatial = tuple(int(n) for n in inputs.shape[2:])
    extra = [(-n) % step for n in spatial]
    if not any(extra):
        return inputs, None
    pad: list[int] = []
    for e in reversed(extra):
        pad += [0, e]
    # replicate padding needs a float tensor without MONAI metadata
    padded = torch.nn.functional.pad(_plain(inputs).float(), pad, mode="replicate").to(inputs.dtype)
    return padded, tuple(n * scale for n in spatial)


def _fits(inputs: torch.Tensor, roi_size: Sequence[int] | int) -> bool:
    spatial = inputs.shape[2:]
    roi = [roi_size] * len(spatial) if isinstance(roi_size, int) else list(roi_size)
    return all(s <= r for s, r in zip(spatial, roi, strict=False))


def _plain(t: torch.Tensor) -> torch.Tensor:
    return t.as_tensor() if hasattr(t, "as_tensor") else t


def _like(t: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Give ``t`` the input's metadata (affine, applied operations) so ``Invertd`` can undo the preprocessing."""
    if type(inputs).__name__ != "MetaTensor":
        return t
    from monai.data import MetaTensor

    return MetaTensor(t, meta=inputs.meta, applied_operations=inputs.applied_operations)


def sliding_window_settings(parser: Any) -> dict[str, Any]:
    """A bundle config's sliding-window keys as :class:`SampleInferer` arguments.

    Reads ``roi_size`` (None = whole images), ``sw_overlap`` and ``sw_batch_size`` from a MONAI ``ConfigParser``;
    keys the config lacks (configs written before they existed) take the inferer's defaults.

    Example:
        >>> from monai.bundle import ConfigParser
        >>> sliding_window_settings(ConfigParser({"roi_size": [96, 96], "sw_batch_size": 16}))
        {'roi_size': [96, 96], 'overlap': 0.25, 'sw_batch_size': 16}
    """
    keys = {"roi_size": ("roi_size", None), "overlap": ("sw_overlap", 0.25), "sw_batch_size": ("sw_batch_size", 1)}
    return {arg: parser.get_parsed_content(key) if key in parser else default for arg, (key, default) in keys.items()}
