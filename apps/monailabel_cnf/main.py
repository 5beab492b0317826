"""MONAI Label app for monai_cnf bundles: the stock ``monaibundle`` app + CNF uncertainty for active learning.

It extends MONAI Label's own ``monaibundle`` sample app (shipped in the ``monailabel`` wheel under
``<prefix>/monailabel/sample-apps/monaibundle``; override with ``MONAILABEL_STOCK_APP=/path/to/monaibundle``) and
adds:

- scoring method ``cnf_uncertainty`` (one per bundle, ``<bundle>_uncertainty`` when several): N CNF samples per
  unlabeled image, score = mean per-pixel binary entropy of the sample mean (or sample variance) inside the
  estimated field of view, written into each image's datastore info under ``cnf_uncertainty``;
- strategy ``cnf_uncertainty``: MONAI Label's ``Epistemic`` strategy reading that key (most uncertain image first);
- the preset recorded with ``models/model.pt`` (``models/provenance.json``; without a record, ``cpu`` when there
  is no GPU): its config files, merged by MONAI's own rule, for inference (``inference.json`` [+
  ``inference_paper.json``]) and training (``train.json`` [+ ``cpu.json``]), so inference, scoring and training
  build the same network, and the published weights record their preset;
- a train task that publishes the new weights to ``<bundle>/models/model.pt`` so inference and scoring reload them;
- 2D labels written as a PNG of the image's size (see :class:`To2DLabeld`).

Offline by default: ``sam2=false`` and ``zoo_source=github`` (bundles are read from ``<app>/model/<name>``; nothing
is downloaded). Conf keys (``--conf KEY VALUE``): ``models`` (bundle folder names under ``model/``),
``cnf_method`` (entropy|variance), ``cnf_num_samples`` (8), ``cnf_temperature`` (1.0), ``cnf_fov_threshold`` (0.1,
``none`` to score every pixel), ``skip_scoring`` (false). See docs/monailabel.md.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import monai.bundle
import numpy as np
import torch
from monai.transforms import MapTransform
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.epistemic import Epistemic
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.tasks.train.bundle import BundleTrainTask
from monailabel.utils.others.generic import strtobool

from monai_cnf.bundle import load_bundle
from monai_cnf.data.readers import is_row_major
from monai_cnf.label import BundleUncertaintyScorer, preset_configs, rank_by_score

logger = logging.getLogger(__name__)

#: the datastore image-info key holding the CNF uncertainty score
SCORE_KEY = "cnf_uncertainty"


def _stock_app_module() -> Any:
    """Import MONAI Label's stock ``monaibundle`` ``main.py`` (not an importable package) from the wheel's data."""
    candidates = [
        os.environ.get("MONAILABEL_STOCK_APP", ""),
        os.path.join(sys.prefix, "monailabel", "sample-apps", "monaibundle"),
    ]
    for folder in candidates:
        main_py = os.path.join(folder, "main.py") if folder else ""
        if main_py and os.path.isfile(main_py):
            spec = importlib.util.spec_from_file_location("monailabel_stock_monaibundle", main_py)
            module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            spec.loader.exec_module(module)  # type: ignore[union-attr]
            return module
    raise FileNotFoundError(
        f"MONAI Label's stock monaibundle app was not found in {candidates}; set MONAILABEL_STOCK_APP to its folder."
    )


_stock = _stock_app_module()


class To2DLabeld(MapTransform):
    """Turn a 2D ``(1, *spatial)`` prediction into the 2D uint8 array MONAI Label's writer expects, ``(x, y)``.

    MONAI Label's ``Restored`` + ITK writer follow MONAI's ``(x, y)`` convention (the default ``PILReader`` with
    ``reverse_indexing=True``: arrays indexed ``(x, y)``, transposed on writing). The bundles load PNG/TIFF rows
    first (:func:`monai_cnf.data.image_readers`), so a raster image's ``(1, H, W)`` prediction is transposed here;
    NIfTI and DICOM are loaded in ``(x, y)`` order already and keep it. Without this step the channel axis is
    written as a 3rd dimension and ``Restored`` resizes ``(H, W)`` to ``(W, H)``.
    """

    def __init__(self, keys: Any, raster_row_major: bool = True, image_path_key: str = "image_path") -> None:
        super().__init__(keys)
        self.raster_row_major = raster_row_major
        self.image_path_key = image_path_key

    def _row_major(self, d: dict[str, Any]) -> bool:
        path = d.get(self.image_path_key)
        if path is None:  # MONAI Label sets image_path; else the loaded image's file name
            path = getattr(d.get("image"), "meta", {}).get("filename_or_obj", "")
        return self.raster_row_major and (is_row_major(str(path)) if path else True)

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            pred = d[key]
            arr = pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
            if arr.ndim == 3 and arr.shape[0] == 1:
                arr = arr[0]
                arr = arr.T if self._row_major(d) else arr
                d[key] = np.ascontiguousarray(arr).astype(np.uint8)
        return d


class CNFBundleInferTask(BundleInferTask):
    """MONAI Label's ``BundleInferTask`` over the weights' preset configs (MONAI's merge of the list) and
    :class:`To2DLabeld` for 2D bundles (the label comes back as a PNG of the image's size)."""

    def __init__(self, path: str, conf: dict[str, str], preset: dict[str, Any]):
        self.preset = preset
        super().__init__(path, conf)

    def _load_bundle_config(self, path: str, config: str) -> Any:
        parser = monai.bundle.ConfigParser()
        parser.read_config([str(f) for f in self.preset["inference"]])
        parser.update({self.const.key_bundle_root(): path, **self.preset["overrides"]})
        return parser

    def post_transforms(self, data: Any = None) -> list[Any]:
        post = list(super().post_transforms(data))
        if self.dimension != 2:
            return post
        fix = To2DLabeld(self.key_pred, raster_row_major=_raster_row_major(self.bundle_config))
        # before MONAI Label's Restored (appended last by BundleInferTask)
        return [*post[:-1], fix, post[-1]] if self.add_post_restore and post else [*post, fix]


def _raster_row_major(config: Any) -> bool:
    """Whether the bundle's ``LoadImaged`` reads PNG/TIFF rows first: its reader is
    ``monai_cnf.data.image_readers()`` or it sets ``reverse_indexing: false`` (MONAI's default is ``(x, y)``)."""
    for key in ("preprocessing", "pre_transforms"):
        section = config.get(key)
        transforms = section.get("transforms", []) if isinstance(section, dict) else section or []
        for t in transforms if isinstance(transforms, list) else []:
            if isinstance(t, dict) and str(t.get("_target_", "")).endswith("LoadImaged"):
                return "image_readers" in str(t.get("reader", "")) or not bool(t.get("reverse_indexing", True))
    return False


class CNFUncertaintyScoring(ScoringMethod):
    """Score unlabeled images by the disagreement between CNF samples (see :mod:`monai_cnf.label.scoring`).

    Request keys: ``all`` (score labeled images too; default false), ``force`` (recompute even when the image was
    scored with the same weights; default false).
    Returns ``{"method", "scores": {image_id: score}, "ranking": [most uncertain first]}``.
    """

    def __init__(
        self,
        bundle_path: str,
        method: str,
        num_samples: int,
        temperature: float,
        fov: float | None,
    ):
        super().__init__(f"CNF sample disagreement ({method} of {num_samples} samples at tau={temperature})")
        self.method = method
        self.scorer = BundleUncertaintyScorer(
            bundle_path,
            num_samples=num_samples,
            temperature=temperature,
            method=method,
            fov_threshold=fov,
            device="cuda" if torch.cuda.is_available() else "cpu",
        )

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        checkpoint = self.scorer.checkpoint
        if not checkpoint.is_file():
            logger.warning("no weights at %s: train the model first; nothing scored", checkpoint)
            return {}
        version = int(checkpoint.stat().st_mtime_ns)
        force = strtobool(str(request.get("force", "false")))
        images = datastore.list_images() if strtobool(str(request.get("all", "false"))) else None
        images = images if images is not None else datastore.get_unlabeled_images()
        scores: dict[str, float] = {}
        for image_id in images:
            info = datastore.get_image_info(image_id)
            if not force and info.get(f"{SCORE_KEY}_version") == version and SCORE_KEY in info:
                scores[image_id] = float(info[SCORE_KEY])
                continue
            score = self.scorer(datastore.get_image_uri(image_id))
            datastore.update_image_info(
                image_id, {SCORE_KEY: score, f"{SCORE_KEY}_method": self.method, f"{SCORE_KEY}_version": version}
            )
            scores[image_id] = score
            logger.info("%s: %s = %.6f", image_id, SCORE_KEY, score)
        ranking = rank_by_score(scores)
        logger.info("CNF uncertainty ranking (most uncertain first): %s", ranking)
        return {"method": self.method, "scores": scores, "ranking": ranking}


class CNFBundleTrainTask(BundleTrainTask):
    """MONAI Label's ``BundleTrainTask`` with the weights' preset configs and publication of the new weights.

    - runs the preset's ``[train.json, cpu.json]`` (or ``train.json`` alone for ``paper``) with its overrides;
    - keeps validation items without a FOV ``mask`` working (MONAI Label's datastore has none);
    - writes checkpoints under ``<bundle>/runs/monailabel`` and copies the best (else the final) weights atomically
      to ``<bundle>/models/model.pt`` (recording their preset), which MONAI Label's infer task and our scoring
      reload on change.
    """

    def __init__(self, path: str, conf: dict[str, str], preset: dict[str, Any]):
        super().__init__(path, conf)
        self.preset = preset

    def _update_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        run_dir = os.path.join(self.bundle_path, "runs", "monailabel")
        overrides["output_dir"] = run_dir
        overrides["ckpt_dir"] = os.path.join(run_dir, "models")
        overrides["progress"] = False
        overrides["num_workers"] = 0
        overrides.update(self.preset["overrides"])
        # datastore items carry no FOV mask: let the validation loaders skip it (the F-score then uses all pixels);
        # the bundle's train.json does this itself since 0.2.0, kept here for older bundle copies
        # (bundles from 0.7.0 on also pass their contrast equalisation, the preprocessing the weights were trained with)
        equalize = any('"equalize_contrast"' in Path(f).read_text() for f in self.preset["train"])
        overrides["validate#preprocessing#transforms"] = (
            "$monai_cnf.data.drive_load_transforms(['image', 'label', 'mask'], allow_missing_keys=True"
            + (", equalize_contrast=@equalize_contrast)" if equalize else ")")
            + " + [@pad_transform, monai.transforms.EnsureTyped(keys=['image', 'label', 'mask'], track_meta=False,"
            " allow_missing_keys=True)]"
        )
        return overrides

    def run_single_gpu(self, request: dict[str, Any], overrides: dict[str, Any]) -> None:
        configs = [str(f) for f in self.preset["train"]]
        logger.info("training %s with configs %s", self.bundle_path, configs)
        monai.bundle.run(
            run_id=request.get("run_id", "run"),
            init_id=None,
            final_id=None,
            meta_file=self.bundle_metadata_path,
            config_file=configs,
            **overrides,
        )
        self._publish(overrides["ckpt_dir"])

    def _publish(self, ckpt_dir: str) -> None:
        from monai_cnf.bundle import RunFolder

        found = RunFolder(os.path.dirname(ckpt_dir)).checkpoint()  # the run folder's one choice of weights
        for src in [str(found)] if found is not None else []:
            if os.path.isfile(src):
                dst = os.path.join(self.bundle_path, "models", "model.pt")
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dst), suffix=".pt.tmp")
                os.close(fd)
                shutil.copyfile(src, tmp)
                os.replace(tmp, dst)
                preset, overrides = self.preset["preset"], self.preset["overrides"]
                load_bundle(self.bundle_path).record_weights(dst, preset, "cnf", overrides)
                logger.info("published %s -> %s", src, dst)
                return
        logger.warning("no checkpoint found in %s to publish", ckpt_dir)


class CNFApp(_stock.MyApp, MONAILabelApp):  # MONAILabelApp listed so MONAI Label's app loader finds this class
    """The stock ``monaibundle`` app, offline by default, with CNF uncertainty scoring and strategy."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]):
        conf = {"sam2": "false", "zoo_source": "github", **(conf or {})}
        self._presets: dict[str, dict[str, Any]] = {}
        super().__init__(app_dir, studies, conf)

    def preset(self, bundle_path: str) -> dict[str, Any]:
        """The preset recorded with the bundle's ``models/model.pt`` and its config files (see
        :func:`monai_cnf.label.preset_configs`; without a record, the device's preset)."""
        cached = self._presets.get(bundle_path)
        if cached is None:
            cached = preset_configs(bundle_path, "cuda" if torch.cuda.is_available() else "cpu")
            logger.info("bundle %s: preset %s (%s)", bundle_path, cached["preset"], cached["overrides"] or "as is")
            self._presets[bundle_path] = cached
        return cached

    def init_infers(self) -> dict[str, InferTask]:
        infers = super().init_infers()
        for name, path in self.models.items():
            if name in infers and not name.endswith("_seg"):
                task = CNFBundleInferTask(path, self.conf, self.preset(path))
                if task.is_valid():
                    infers[name] = task
        return infers

    def init_trainers(self) -> dict[str, TrainTask]:
        if strtobool(self.conf.get("skip_trainers", "false")):
            return {}
        trainers: dict[str, TrainTask] = {}
        for name, path in self.models.items():
            task = CNFBundleTrainTask(path, self.conf, self.preset(path))
            if task.is_valid():
                logger.info("+++ Adding Trainer:: %s => %s (preset %s)", name, path, task.preset["preset"])
                trainers[name] = task
        return trainers

    def init_scoring_methods(self) -> dict[str, ScoringMethod]:
        methods = super().init_scoring_methods()
        if strtobool(self.conf.get("skip_scoring", "false")):
            return methods
        method = self.conf.get("cnf_method", "entropy")
        num_samples = int(self.conf.get("cnf_num_samples", "8"))
        temperature = float(self.conf.get("cnf_temperature", "1.0"))
        fov_conf = self.conf.get("cnf_fov_threshold", "0.1")
        fov = None if str(fov_conf).lower() == "none" else float(fov_conf)
        for name, path in self.models.items():
            key = SCORE_KEY if len(self.models) == 1 else f"{name}_uncertainty"
            methods[key] = CNFUncertaintyScoring(path, method, num_samples, temperature, fov)
            logger.info("+++ Adding Scoring Method:: %s => %s", key, path)
        return methods

    def init_strategies(self) -> dict[str, Strategy]:
        strategies = super().init_strategies()
        strategies[SCORE_KEY] = Epistemic(key=SCORE_KEY, desc="Most uncertain image first (CNF sample disagreement)")
        return strategies
