"""Score images with a bundle's CNF: N samples per image -> one sample-disagreement score (MONAI Label-free core).

MONAI Label's scoring method in ``apps/monailabel_cnf`` wraps :class:`BundleUncertaintyScorer`; keeping the
model loading and scoring here lets the main environment test it without ``monailabel``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from monai_cnf.label.scoring import UNCERTAINTY_METHODS, fov_mask, uncertainty_score

__all__ = ["BundleUncertaintyScorer", "matching_overlays", "read_config_with_overlays"]

logger = logging.getLogger(__name__)


def read_config_with_overlays(config_file: str | os.PathLike, overlays: Sequence[str | os.PathLike] = ()) -> Any:
    """A ``monai.bundle.ConfigParser`` of ``config_file`` with the overlays' keys merged on top, where they apply.

    MONAI's multi-file merge (``read_config([a, b])``) fails when an overlay sets a nested id whose parent the base
    lacks (``"train#augmentation"`` on top of ``inference.json``). Here such ids are skipped, so a training preset
    overlay (``cpu.json``) can resize the network of ``inference.json``: its plain keys (``num_steps``,
    ``hidden_channels``, ...) replace the base's, nested ids are set only when their parent exists.

    Args:
        config_file: the base config (e.g. ``configs/inference.json``).
        overlays: config files merged in order. Defaults to ().

    Returns:
        the parser (not yet parsed).

    Example:
        >>> parser = read_config_with_overlays("bundles/drive_vessel/configs/inference.json")  # doctest: +SKIP
    """
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(config_file))
    for overlay in overlays:
        for key, value in ConfigParser.load_config_file(str(overlay)).items():
            parts = key.replace("::", "#").split("#")
            if len(parts) > 1:
                try:
                    parser[parts[0]]
                except KeyError:
                    continue
            parser[key] = value
    return parser


def matching_overlays(
    bundle_root: str | os.PathLike,
    candidates: Sequence[Sequence[str]] = ((), ("cpu.json",), ("inference_paper.json",)),
    checkpoint: str | os.PathLike | None = None,
    config_file: str = "inference.json",
) -> list[str] | None:
    """The first overlay set (files in ``configs/``) whose ``network_def`` has the checkpoint's parameter shapes.

    The bundles' presets build networks of different sizes (``inference.json`` alone or with ``cpu.json``: the CPU
    preset's, the shipped weights'; with ``inference_paper.json``: the paper's), so the weights in
    ``models/model.pt`` tell which preset must be merged for inference and fine-tuning.

    Args:
        bundle_root: the bundle folder.
        candidates: overlay sets to try, in order. Defaults to ``((), ("cpu.json",), ("inference_paper.json",))``.
        checkpoint: the weights; None uses ``<bundle_root>/models/model.pt``. Defaults to None.
        config_file: the base config in ``configs/``. Defaults to "inference.json".

    Returns:
        the matching overlay list, or None when there are no weights or none matches.

    Example:
        >>> matching_overlays("bundles/drive_vessel", [("cpu.json",), ("inference_paper.json",)])  # doctest: +SKIP
        ['cpu.json']
    """
    root = Path(bundle_root)
    ckpt = Path(checkpoint) if checkpoint is not None else root / "models" / "model.pt"
    if not ckpt.is_file():
        return None
    state = _state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    for overlays in candidates:
        files = [root / "configs" / o for o in overlays]
        if not all(f.is_file() for f in files):
            continue
        parser = read_config_with_overlays(root / "configs" / config_file, files)
        parser["bundle_root"] = str(root)
        net = parser.get_parsed_content("network_def", instantiate=True)
        if {k: tuple(v.shape) for k, v in net.state_dict().items()} == shapes:
            return list(overlays)
    return None


def _state_dict(state: Any) -> dict[str, Any]:
    """A plain ``state_dict`` from a plain one or a checkpoint dict with key ``"network"`` or ``"model"``."""
    if isinstance(state, dict):
        for key in ("network", "model"):
            if isinstance(state.get(key), dict):
                return state[key]
    return state


class BundleUncertaintyScorer:
    """Load a bundle's ``inference.json`` network and preprocessing, and score images by CNF sample disagreement.

    For one image: ``preprocessing`` (load, scale to [0, 1], pad to a multiple of ``2**num_levels``) ->
    :class:`~monai_cnf.engines.SampleInferer` (N samples at temperature tau, per-pixel mean and std, in the bundle's
    sliding windows ``roi_size`` when it sets one) ->
    :func:`~monai_cnf.label.uncertainty_score` inside the estimated field of view (:func:`~monai_cnf.label.fov_mask`
    of the image; padding is outside it).

    Args:
        bundle_root: the bundle folder (with ``configs/inference.json``).
        checkpoint: weights (a plain ``state_dict`` of ``network`` or a checkpoint dict with key ``"network"`` or
            ``"model"``); None uses ``<bundle_root>/models/model.pt``. Defaults to None.
        num_samples: N. Defaults to 8.
        temperature: tau. Defaults to 1.0.
        method: ``"entropy"`` or ``"variance"`` (see :mod:`monai_cnf.label.scoring`). Defaults to "entropy".
        fov_threshold: red-channel threshold of the FOV estimate; None scores every pixel. Defaults to 0.1.
        device: torch device string. Defaults to "cpu".
        config_file: the config inside ``configs/``. Defaults to "inference.json".
        overlays: more configs inside ``configs/`` merged on top (MONAI's multi-file merge), e.g. ``["cpu.json"]``
            when the weights were trained with the CPU preset's network sizes. Defaults to ().
        seed: seed of the sampling generator, so the same weights give the same scores. Defaults to 0.

    Example:
        >>> scorer = BundleUncertaintyScorer("bundles/drive_vessel", num_samples=4)  # doctest: +SKIP
        >>> scorer("image.png")  # doctest: +SKIP
        0.031
    """

    def __init__(
        self,
        bundle_root: str | os.PathLike,
        checkpoint: str | os.PathLike | None = None,
        num_samples: int = 8,
        temperature: float = 1.0,
        method: str = "entropy",
        fov_threshold: float | None = 0.1,
        device: str = "cpu",
        config_file: str = "inference.json",
        overlays: Sequence[str] = (),
        seed: int = 0,
    ) -> None:
        if method not in UNCERTAINTY_METHODS:
            raise ValueError(f"method must be one of {UNCERTAINTY_METHODS}, got {method!r}.")
        root = Path(bundle_root)
        config = root / "configs" / config_file
        if not config.is_file():
            raise FileNotFoundError(f"bundle config {str(config)!r} not found; pass a bundle folder with configs/.")
        self.bundle_root = root
        self.checkpoint = Path(checkpoint) if checkpoint is not None else root / "models" / "model.pt"
        self.num_samples = int(num_samples)
        self.temperature = float(temperature)
        self.method = method
        self.fov_threshold = fov_threshold
        self.device = torch.device(device)
        self.seed = int(seed)
        self.configs = [str(config)]
        for name in overlays:
            overlay = root / "configs" / name
            if not overlay.is_file():
                raise FileNotFoundError(f"overlay {str(overlay)!r} not found; pass names of files in configs/.")
            self.configs.append(str(overlay))
        self._network: torch.nn.Module | None = None
        self._preprocessing: Any = None
        self._window: dict[str, Any] = {}
        self._mtime: float | None = None

    def _load(self) -> None:
        """(Re)load the network when the checkpoint file changed since the last call (e.g. after training)."""
        if not self.checkpoint.is_file():
            raise FileNotFoundError(
                f"checkpoint {str(self.checkpoint)!r} not found; train the bundle first or pass checkpoint=."
            )
        mtime = self.checkpoint.stat().st_mtime
        if self._network is not None and mtime == self._mtime:
            return
        parser = read_config_with_overlays(self.configs[0], self.configs[1:])
        parser["bundle_root"] = str(self.bundle_root)
        parser["device"] = str(self.device)
        network = parser.get_parsed_content("network_def", instantiate=True).to(self.device)
        state = _state_dict(torch.load(self.checkpoint, map_location=self.device, weights_only=True))
        network.load_state_dict(state)
        network.eval()
        self._network = network
        self._preprocessing = parser.get_parsed_content("preprocessing", instantiate=True)
        from monai_cnf.engines import sliding_window_settings

        self._window = sliding_window_settings(parser)  # as the bundle's inferer (DRIVE CPU preset: 96 x 96)
        self._mtime = mtime
        logger.info("loaded %s for uncertainty scoring", self.checkpoint)

    def score_tensor(self, image: torch.Tensor) -> float:
        """Score one preprocessed image ``(C, *spatial)`` (or ``(1, C, *spatial)``) in [0, 1].

        Args:
            image: the image, already padded to the network's divisor.

        Returns:
            the image's uncertainty score (higher = more disagreement between samples).
        """
        from monai_cnf.engines import SampleInferer

        self._load()
        x = torch.as_tensor(image, dtype=torch.float32)
        x = x.unsqueeze(0) if x.dim() == 3 else x
        x = x.to(self.device)
        generator = torch.Generator(device=self.device).manual_seed(self.seed)
        inferer = SampleInferer(
            num_samples=self.num_samples,
            temperature=self.temperature,
            return_std=True,
            generator=generator,
            **self._window,
        )
        out = inferer(x, self._network)
        mask = fov_mask(x, self.fov_threshold) if self.fov_threshold is not None else None
        if mask is not None and not bool(mask.any()):
            mask = None  # a dark image without a visible FOV: score every pixel rather than fail
        return float(uncertainty_score(out["pred"], mask=mask, method=self.method, std=out["std"])[0])

    def __call__(self, image_path: str | os.PathLike) -> float:
        """Score the image file ``image_path`` (loaded with the bundle's ``preprocessing``).

        Args:
            image_path: an image file the bundle's reader accepts (PNG/TIFF for DRIVE).

        Returns:
            the uncertainty score.
        """
        self._load()
        data = self._preprocessing({"image": str(image_path)})
        return self.score_tensor(data["image"])
