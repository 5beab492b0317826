"""Score images with a bundle's CNF: N samples per image -> one sample-disagreement score (MONAI Label-free core).

MONAI Label's scoring method in ``apps/monailabel_cnf`` wraps :class:`BundleUncertaintyScorer`; keeping the
model loading and scoring here lets the main environment test it without ``monailabel``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from monai_cnf.label.scoring import UNCERTAINTY_METHODS, fov_mask, uncertainty_score

__all__ = ["BundleUncertaintyScorer", "preset_configs"]

logger = logging.getLogger(__name__)


def preset_configs(bundle_root: str | os.PathLike, device: str = "cpu") -> dict[str, Any]:
    """The preset of a bundle's ``models/model.pt`` (as recorded in ``models/provenance.json``, else the device's)
    and the config files MONAI merges for it: ``{"preset", "overrides", "inference": [...], "train": [...]}``.

    ``overrides`` are the keys the weights were trained with on top of the preset (applied with the configs).

    Example:
        >>> import monai_cnf
        >>> info = preset_configs(Path(monai_cnf.__file__).parents[1] / "bundles" / "super_resolution")
        >>> info["preset"], [p.name for p in info["train"]]
        ('cpu', ['train.json', 'cpu.json'])
    """
    from monai_cnf.bundle import Preset, Workflow, load_bundle

    bundle = load_bundle(bundle_root)
    recorded = bundle.weights_provenance(bundle.weights("cnf"))
    preset = Preset(recorded.get("preset") or Preset.auto.resolve(device).value)
    return {
        "preset": preset.value,
        "overrides": dict(recorded.get("overrides") or {}),
        "inference": bundle.config_files(Workflow.inference, preset),
        "train": bundle.config_files(Workflow.train, preset),
    }


class BundleUncertaintyScorer:
    """Load a bundle's trained network (:func:`~monai_cnf.bundle.load_trained`) and preprocessing, and score images
    by CNF sample disagreement.

    For one image: ``preprocessing`` (load, scale to [0, 1], pad to a multiple of ``2**num_levels``) ->
    :class:`~monai_cnf.engines.SampleInferer` (N samples at temperature tau, per-pixel mean and std, in the bundle's
    sliding windows ``roi_size`` when it sets one) ->
    :func:`~monai_cnf.label.uncertainty_score` inside the estimated field of view (:func:`~monai_cnf.label.fov_mask`
    of the image; padding is outside it).

    Args:
        bundle_root: the bundle folder (with ``configs/inference.json``).
        checkpoint: weights (a plain ``state_dict`` or a trainer checkpoint); None uses
            ``<bundle_root>/models/model.pt``. Defaults to None.
        num_samples: N. Defaults to 8.
        temperature: tau. Defaults to 1.0.
        method: ``"entropy"`` or ``"variance"`` (see :mod:`monai_cnf.label.scoring`). Defaults to "entropy".
        fov_threshold: red-channel threshold of the FOV estimate; None scores every pixel. Defaults to 0.1.
        device: torch device string. Defaults to "cpu".
        preset: the preset of weights that record none (see :func:`~monai_cnf.bundle.load_trained`). Defaults to
            None.
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
        preset: str | None = None,
        seed: int = 0,
    ) -> None:
        if method not in UNCERTAINTY_METHODS:
            raise ValueError(f"method must be one of {UNCERTAINTY_METHODS}, got {method!r}.")
        root = Path(bundle_root)
        if not (root / "configs" / "inference.json").is_file():
            raise FileNotFoundError(f"{root} has no configs/inference.json; pass a bundle folder with configs/.")
        self.bundle_root = root
        self.checkpoint = Path(checkpoint) if checkpoint is not None else root / "models" / "model.pt"
        self.num_samples = int(num_samples)
        self.temperature = float(temperature)
        self.method = method
        self.fov_threshold = fov_threshold
        self.device = torch.device(device)
        self.seed = int(seed)
        self.preset = preset
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
        from monai_cnf.bundle import load_trained

        device = str(self.device)
        trained = load_trained(self.bundle_root, checkpoint=self.checkpoint, preset=self.preset, device=device)
        parser = trained.parser
        self._network = trained.network
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
