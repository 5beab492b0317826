"""The folder a ``cnf train`` run writes: resolved configs, checkpoints, ``models/``, the key metric, MLflow ids.

Layout (every name here is the one place it is spelled)::

    <run>/config.json                 resolved config of the first start
    <run>/config_resume[.N].json      resolved config of each ``--resume`` (never overwritten; the newest wins)
    <run>/provenance.json             bundle, preset and model kind the run was started with
    <run>/checkpoints/checkpoint_epoch=N.pt   interval checkpoints (trainer, optimizer, network): for resuming
    <run>/models/model.pt             the best key metric's network weights;  models/model_final.pt: the last
    <run>/models/key_metric.json      the best key metric (name, value, epoch)
    <run>/mlflow_run_id, mlflow_eval_run_id   MLflow ids of the training run and the latest evaluation

Only the standard library is imported here.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["RunFolder", "default_checkpoint", "latest_checkpoint"]

TRAIN_CONFIG, RESUME_CONFIG, PROVENANCE = "config.json", "config_resume.json", "provenance.json"
MODELS, CHECKPOINTS = "models", "checkpoints"
BEST_MODEL, FINAL_MODEL, KEY_METRIC = "model.pt", "model_final.pt", "key_metric.json"
RUN_ID, EVAL_RUN_ID, CALIBRATION_RUN_ID = "mlflow_run_id", "mlflow_eval_run_id", "mlflow_calibration_run_id"
_SUFFIXES = (".pt", ".pth")
_EPOCH_RE = re.compile(r"epoch=(\d+)\.pt$")
_ITER_RE = re.compile(r"iteration=(\d+)\.pt$")


def latest_checkpoint(directory: str | os.PathLike, prefix: str = "") -> str | None:
    """The newest interval checkpoint in ``directory`` (highest ``epoch=N``, else highest ``iteration=N``), or None.

    Temporary files of an interrupted save (``.name.tmp``) are ignored.

    Example:
        >>> latest_checkpoint("/nonexistent") is None
        True
    """
    directory = Path(directory)
    if not directory.is_dir():
        return None
    best: tuple[int, int, str] | None = None
    for p in directory.iterdir():
        if not p.is_file() or not p.name.startswith(prefix):
            continue
        m_epoch, m_iter = _EPOCH_RE.search(p.name), _ITER_RE.search(p.name)
        if m_epoch is None and m_iter is None:
            continue
        key = (1, int(m_epoch.group(1)), str(p)) if m_epoch else (0, int(m_iter.group(1)), str(p))  # type: ignore[union-attr]
        if best is None or key[:2] > best[:2]:
            best = key
    return None if best is None else best[2]


@dataclass(frozen=True)
class RunFolder:
    """A training run folder (see the module docstring for its layout).

    Example:
        >>> import tempfile
        >>> run = RunFolder(Path(tempfile.mkdtemp()))
        >>> run.trained_config() is None, run.checkpoint() is None
        (True, True)
        >>> run.next_config().name
        'config.json'
        >>> for name in ("config.json", "config_resume.json", "config_resume.2.json", "config_resume.10.json"):
        ...     _ = (run.root / name).write_text("{}")
        >>> run.trained_config().name, run.next_config().name
        ('config_resume.10.json', 'config_resume.11.json')
        >>> (run.root / "models").mkdir(); _ = (run.root / "models" / "model_final.pt").write_bytes(b"")
        >>> run.checkpoint().name
        'model_final.pt'
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser().absolute())

    def _resumes(self) -> dict[int, Path]:
        stem = Path(RESUME_CONFIG).stem
        found = {0: self.root / RESUME_CONFIG} if (self.root / RESUME_CONFIG).is_file() else {}
        for path in self.root.glob(f"{stem}.*.json"):
            number = path.name[len(stem) + 1 : -len(".json")]
            if number.isdigit():
                found[int(number)] = path
        return found

    def trained_config(self) -> Path | None:
        """The resolved config the run's weights were last trained with (the newest resume's, else ``config.json``)."""
        resumes = self._resumes()
        if resumes:
            return resumes[max(resumes)]
        first = self.root / TRAIN_CONFIG
        return first if first.is_file() else None

    def next_config(self) -> Path:
        """Where a (re)start writes its resolved config: ``config.json``, then ``config_resume[.N].json``."""
        if not (self.root / TRAIN_CONFIG).is_file():
            return self.root / TRAIN_CONFIG
        resumes = self._resumes()
        if not resumes:
            return self.root / RESUME_CONFIG
        return self.root / f"{Path(RESUME_CONFIG).stem}.{max(resumes) + 1}.json"

    def checkpoints(self) -> list[Path]:
        """Every ``.pt`` file in ``checkpoints/`` and ``models/``."""
        found: list[Path] = []
        for name in (CHECKPOINTS, MODELS):
            folder = self.root / name
            if folder.is_dir():
                found += sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _SUFFIXES)
        return found

    def resumable(self) -> str | None:
        """The newest interval checkpoint (what ``--resume`` restores), or None."""
        return latest_checkpoint(self.root / CHECKPOINTS)

    def checkpoint(self) -> Path | None:
        """The weights to evaluate or sample with, in this one order: ``models/model.pt`` (best key metric),
        ``models/model_final.pt``, the newest ``checkpoints/checkpoint_epoch=N.pt``; None when there are none."""
        for name in (BEST_MODEL, FINAL_MODEL):
            if (self.root / MODELS / name).is_file():
                return self.root / MODELS / name
        latest = self.resumable()
        return Path(latest) if latest else None

    def key_metric(self) -> dict[str, Any] | None:
        """``models/key_metric.json``: ``{"key_metric_name", "best_metric", "best_metric_epoch", ...}``, or None."""
        path = self.root / MODELS / KEY_METRIC
        try:
            return json.loads(path.read_text()) if path.is_file() else None
        except (OSError, ValueError):
            return None

    def mlflow_run_id(self, name: str = RUN_ID) -> str | None:
        """An MLflow run id stored in the folder (``RUN_ID``, ``EVAL_RUN_ID`` or ``CALIBRATION_RUN_ID``), or None."""
        path = self.root / name
        text = path.read_text().strip() if path.is_file() else ""
        return text or None

    def write_mlflow_run_id(self, run_id: str, name: str = RUN_ID) -> Path:
        """Store an MLflow run id atomically and return the file."""
        return _atomic_write(self.root / name, run_id + "\n")

    def provenance(self) -> dict[str, str]:
        """``provenance.json``: the bundle, preset and model kind the run was started with (``{}`` when absent)."""
        path = self.root / PROVENANCE
        try:
            data = json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def write_provenance(self, **fields: str) -> Path:
        """Record ``fields`` (e.g. ``bundle``, ``preset``, ``model``) in ``provenance.json``, keeping earlier ones."""
        return _atomic_write(self.root / PROVENANCE, json.dumps({**self.provenance(), **fields}, indent=2) + "\n")


def _atomic_write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def default_checkpoint(checkpoint: str | os.PathLike | None, output_dir: str | os.PathLike, bundle_root: str) -> str:
    """The weights a bundle config evaluates or infers with: ``checkpoint`` if given, else the run folder's
    (:meth:`RunFolder.checkpoint`), else the bundle's ``models/model.pt``.

    Example:
        >>> default_checkpoint("/w/m.pt", "/run", "/b")
        '/w/m.pt'
    """
    if checkpoint not in (None, "", "None", "null"):
        return str(checkpoint)
    found = RunFolder(Path(output_dir)).checkpoint()
    if found is not None:
        return str(found)
    shipped = Path(bundle_root) / MODELS / BEST_MODEL
    if shipped.is_file():
        return str(shipped)
    raise FileNotFoundError(
        f"no weights found: no checkpoint in {output_dir}/{MODELS} or {output_dir}/{CHECKPOINTS} and no {shipped}; "
        "train first or pass checkpoint=<file.pt>."
    )
