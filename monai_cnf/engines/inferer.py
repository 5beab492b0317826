"""SampleInferer: a MONAI ``Inferer`` that summarises N samples of p(y | x) drawn in memory-bounded chunks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.inferers import Inferer, sliding_window_inference

__all__ = ["SampleInferer", "sliding_window_settings"]


class SampleInferer(Inferer):
    """Draw ``num_samples`` samples of ``p(y | x)`` at temperature ``tau`` and return their mean (and std/samples).

    The model is a :class:`~monai_cnf.networks.base.ConditionalLikelihoodModel` (``ConditionalNormalizingFlow``,
    ``FactoredBaseline``): ``sample(x, num_samples, temperature, generator, chunk_size) -> (S, B, C, *spatial)``.
    Samples are drawn ``chunk_size`` at a time and reduced on the fly (running sum and sum of squares in float64),
    so memory does not grow with ``num_samples`` unless ``return_samples`` is set. For binary labels the mean is the
    per-pixel vessel frequency; for 8-bit targets it is the mean intensity in [0, 255].

    For images larger than ``roi_size`` the sampling runs window by window through MONAI's
    :func:`~monai.inferers.sliding_window_inference` (mean and second moment are blended across overlapping
    windows, so ``std`` stays consistent). Stitched samples are per-window samples blended where windows overlap and,
    when the windows' samples are integers (binary labels, 8-bit levels), rounded back to them: in an overlap a pixel
    takes the blending-weighted vote of the windows, so binary samples stay exactly {0, 1}; the mean and std are then
    the blended window moments, not the moments of the stitched samples. ``roi_size`` must be divisible by
    ``2**num_levels``.

    Args:
        num_samples: N, number of samples. Defaults to 20.
        temperature: tau, the prior's temperature (0 gives the mode-like deterministic decode). Defaults to 1.0.
        chunk_size: samples drawn per call. Defaults to 4.
        return_std: also return the per-pixel standard deviation. Defaults to False.
        return_samples: also return the ``(S, B, C, *spatial)`` samples. Defaults to False.
        roi_size: sliding-window size; None runs on the whole image. Defaults to None.
        sw_batch_size: windows per sliding-window batch. Defaults to 1.
        overlap: sliding-window overlap. Defaults to 0.25.
        mode: sliding-window blending, ``"constant"`` or ``"gaussian"``. Defaults to ``"gaussian"``.
        generator: optional ``torch.Generator`` passed to ``sample``. Defaults to None.
        exact_mean: for a model with closed-form moments (``exact_moments``: the factored Bernoulli at temperature
            1), return them instead of Monte-Carlo estimates (samples, when requested, are still drawn).
            Defaults to True.

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
        mode: str = "gaussian",
        generator: torch.Generator | None = None,
        exact_mean: bool = True,
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
        self.mode = mode
        self.generator = generator
        self.exact_mean = bool(exact_mean)

    def _draw(self, network: Any, x: torch.Tensor, n: int) -> torch.Tensor:
        s = network.sample(x, num_samples=n, temperature=self.temperature, generator=self.generator, chunk_size=n)
        if s.dim() != x.dim() + 1 or s.shape[0] != n or s.shape[1] != x.shape[0]:
            raise ValueError(
                f"network.sample must return (S, B, C, *spatial) with S={n}, B={x.shape[0]}; got {tuple(s.shape)}."
            )
        return s

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
        while done < n_draw:
            n = min(self.chunk_size, n_draw - done)
            s = self._draw(network, x, n)
            s64 = s.detach().to(torch.float64)
            total = total + s64.sum(0)
            sq = sq + (s64 * s64).sum(0)
            if self.return_samples:
                kept.append(s.detach())
            done += n
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
        with torch.no_grad():
            if self.roi_size is None or _fits(inputs, self.roi_size):
                mean, second, samples = self._moments(inputs, network)
            else:
                mean, second, samples = self._sliding(inputs, network)
        mean, second = _plain(mean), _plain(second)
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
        integral = True  # are the window samples integers (binary labels, 8-bit levels)?

        def predictor(window: torch.Tensor) -> tuple[torch.Tensor, ...]:
            nonlocal integral
            mean, second, samples = self._moments(window, network)
            if samples is None:
                return mean, second
            integral = integral and bool(torch.equal(samples, samples.round()))
            # fold samples into channels so MONAI can stitch them like any other output
            s, b = samples.shape[:2]
            return mean, second, samples.transpose(0, 1).reshape(b, s * samples.shape[2], *samples.shape[3:])

        outputs = sliding_window_inference(
            inputs,
            roi_size=self.roi_size,
            sw_batch_size=self.sw_batch_size,
            predictor=predictor,
            overlap=self.overlap,
            mode=self.mode,
        )
        mean, second = outputs[0], outputs[1]
        samples = None
        if len(outputs) > 2:
            stitched = outputs[2]
            b, c = stitched.shape[0], mean.shape[1]
            samples = stitched.reshape(b, -1, c, *stitched.shape[2:]).transpose(0, 1)
            if integral:  # blending made overlaps fractional: a weighted vote keeps samples on the data's levels
                samples = samples.round()
        return _plain(mean), _plain(second), None if samples is None else _plain(samples)


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
