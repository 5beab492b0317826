"""Atomic checkpoints and resumable training on top of MONAI's ``CheckpointSaver`` / ``CheckpointLoader``.

MONAI's :class:`~monai.handlers.CheckpointSaver` writes with ``atomic=False`` (``torch.save`` straight into the
final path), so a run killed while saving leaves a truncated ``.pt`` behind. :class:`AtomicCheckpointSaver` keeps
MONAI's naming, retention and key-metric logic and only swaps the writer: each file is serialised into a temporary
file in the same folder, flushed and ``fsync``-ed, then moved over the final name with :func:`os.replace` (atomic
on POSIX and Windows), so a checkpoint on disk is always either the old complete file or the new complete one.
With ``save_key_metric`` it also records the best key-metric score in ``key_metric.json`` next to the best model and,
with ``restore_best=True`` (resumed runs), reads it back, so the first validation after a resume does not overwrite
the best model with a worse one (MONAI's saver starts with an empty ranking in every process).

:class:`ResumeCheckpointLoader` is a :class:`~monai.handlers.CheckpointLoader` that finds the newest checkpoint in
a folder (``checkpoint_epoch=N.pt``, the highest ``N`` wins), and turns a truncated or corrupt file into one clear
:class:`CorruptCheckpointError`.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import stat
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointLoader, CheckpointSaver

from monai_cnf.bundle.run_folder import KEY_METRIC, latest_checkpoint

__all__ = [
    "BEST_METRIC_FILENAME",
    "AtomicCheckpointSaver",
    "AtomicDiskSaver",
    "CorruptCheckpointError",
    "InitialWeightsLoader",
    "ResumeCheckpointLoader",
    "latest_checkpoint",
    "load_checkpoint",
]

logger = logging.getLogger(__name__)

#: File (in ``save_dir``) where :class:`AtomicCheckpointSaver` records the best key-metric score (the run-folder
#: layout is spelled once, in :mod:`monai_cnf.bundle.run_folder`).
BEST_METRIC_FILENAME = KEY_METRIC


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be deserialised (truncated, corrupt or not a torch file)."""


def _corrupt_message(path: str | os.PathLike, err: BaseException) -> str:
    return (
        f"checkpoint {path} is corrupt or truncated; delete it or pass --checkpoint (or the 'checkpoint' "
        f"override) with a complete file ({type(err).__name__} while reading it)."
    )


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", weights_only: bool = True) -> Any:
    """Load a checkpoint with :func:`torch.load`, turning any deserialisation failure into a clear error.

    Args:
        path: the ``.pt`` file.
        map_location: passed to :func:`torch.load`. Defaults to ``"cpu"``.
        weights_only: passed to :func:`torch.load`. Defaults to True.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        CorruptCheckpointError: when the file is truncated, corrupt or not a torch checkpoint.

    Example:
        >>> import tempfile, torch
        >>> p = tempfile.mktemp(suffix=".pt"); torch.save({"a": torch.ones(1)}, p)
        >>> load_checkpoint(p)["a"]
        tensor([1.])
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; check the path or train the model first.")
    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as err:
        raise CorruptCheckpointError(_corrupt_message(path, err)) from err


class AtomicDiskSaver(DiskSaver):
    """An ignite ``DiskSaver`` that writes atomically (tmp file + fsync + ``os.replace``), with a fixed-name option.

    Args:
        dirname: folder of the checkpoints (created if missing).
        filename: when set, every save uses this name (MONAI's ``key_metric_filename`` / ``final_filename``).
            Defaults to None.
    """

    def __init__(self, dirname: str | os.PathLike, filename: str | None = None) -> None:
        super().__init__(dirname=str(dirname), require_empty=False, atomic=True, create_dir=True)
        self.filename = filename

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        super().__call__(checkpoint=checkpoint, filename=self.filename or filename, metadata=metadata)

    def remove(self, filename: str) -> None:
        path = self.dirname / (self.filename or filename)
        if path.exists():
            path.unlink()

    def _save_func(self, checkpoint: Mapping, path: Path, func: Any) -> None:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=self.dirname)
        try:
            with os.fdopen(fd, "wb") as tmp:
                func(checkpoint, tmp, **self.kwargs)
                tmp.flush()
                os.fsync(tmp.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            if os.path.exists(tmp_name):
                os.remove(tmp_name)
            raise
        os.chmod(path, os.stat(path).st_mode | stat.S_IRGRP | stat.S_IROTH)
        try:  # make the rename itself durable
            dir_fd = os.open(self.dirname, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dir_fd)
        except OSError:
            pass
        finally:
            os.close(dir_fd)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's :class:`~monai.handlers.CheckpointSaver` whose files are written atomically.

    Same arguments as MONAI's saver (``save_dir``, ``save_dict``, ``save_final``, ``save_key_metric``,
    ``key_metric_filename``, ``epoch_level``, ``save_interval``, ``n_saved``, ...). Interval checkpoints are named
    ``{file_prefix}_checkpoint_epoch=N.pt`` (``checkpoint_epoch=N.pt`` without prefix) and are what
    :func:`latest_checkpoint` / :class:`ResumeCheckpointLoader` pick up.

    With ``save_key_metric``, every change of the best score is recorded in ``save_dir/key_metric.json``
    (``{"key_metric_name", "best_metric", "best_metric_epoch", "saved": [[priority, filename], ...]}``, priority =
    the score, negated with ``key_metric_negative_sign``). With ``restore_best=True`` that ranking is loaded at
    construction (when the model file it names still exists) and the attached engine's ``state.best_metric`` /
    ``best_metric_epoch`` are set from it, so a resumed run only replaces the best model with a better one.

    Args:
        save_dir: folder of the checkpoints (created).
        save_dict: objects to save, e.g. ``{"network": net}``.
        restore_best: read ``best_metric_filename`` back (set it to the run's ``resume`` flag). Defaults to False.
        best_metric_filename: the best-score record in ``save_dir``. Defaults to "key_metric.json".
        kwargs: MONAI ``CheckpointSaver`` arguments.

    Example:
        >>> import tempfile, torch
        >>> net = torch.nn.Linear(2, 2)
        >>> saver = AtomicCheckpointSaver(tempfile.mkdtemp(), {"network": net}, save_interval=1)
    """

    def __init__(
        self,
        save_dir: str,
        save_dict: dict,
        restore_best: bool = False,
        best_metric_filename: str = BEST_METRIC_FILENAME,
        **kwargs: Any,
    ) -> None:
        os.makedirs(save_dir, exist_ok=True)
        super().__init__(save_dir=save_dir, save_dict=save_dict, **kwargs)
        for ckpt in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if ckpt is not None:
                fixed = getattr(ckpt.save_handler, "filename", None)
                ckpt.save_handler = AtomicDiskSaver(self.save_dir, filename=fixed)
        self._adopt_existing_interval_files()
        self._sign = -1.0 if kwargs.get("key_metric_negative_sign", False) else 1.0
        self.best_metric_path: Path | None = None
        self.restored_best: dict[str, Any] | None = None
        self._written_best: list | None = None
        if self._key_metric_checkpoint is not None:
            self.best_metric_path = Path(self.save_dir) / best_metric_filename
            if restore_best:
                self._restore_best()

    def _key_metric_file(self, filename: str) -> Path:
        fixed = getattr(self._key_metric_checkpoint.save_handler, "filename", None)  # type: ignore[union-attr]
        return Path(self.save_dir) / (fixed or filename)

    def _restore_best(self) -> None:
        """Seed the key-metric ranking from ``key_metric.json`` when the file and the model it names exist."""
        path = self.best_metric_path
        if path is None or not path.is_file():
            self.logger.info(f"no {path} to restore the best key metric from; the first validation sets it.")
            return
        try:
            info = json.loads(path.read_text())
            saved = [(float(priority), str(name)) for priority, name in info["saved"]]
        except (ValueError, KeyError, TypeError) as err:
            self.logger.warning(f"ignoring unreadable best-metric file {path} ({err}).")
            return
        saved = [item for item in saved if self._key_metric_file(item[1]).is_file()]
        if not saved:
            self.logger.warning(f"{path} names no existing best model; the first validation sets it.")
            return
        self._key_metric_checkpoint.load_state_dict({"_saved": saved})  # type: ignore[union-attr]
        self._written_best = [list(item) for item in saved]
        self.restored_best = info
        self.logger.info(
            f"restored best {info.get('key_metric_name', 'key metric')} = {info.get('best_metric')} "
            f"(epoch {info.get('best_metric_epoch')}) from {path}"
        )

    def attach(self, engine: Engine) -> None:
        super().attach(engine)
        best = self.restored_best
        if best is not None and hasattr(engine.state, "best_metric") and best.get("best_metric") is not None:
            engine.state.best_metric = best["best_metric"]  # MONAI's workflow compares later epochs against it
            engine.state.best_metric_epoch = int(best.get("best_metric_epoch", -1))

    def metrics_completed(self, engine: Engine) -> None:
        super().metrics_completed(engine)
        self._write_best(engine)

    def _write_best(self, engine: Engine) -> None:
        """Write ``key_metric.json`` (atomically) when the key-metric ranking changed."""
        ckpt = self._key_metric_checkpoint
        if ckpt is None or self.best_metric_path is None or not ckpt._saved:
            return
        saved = [[float(item.priority), str(item.filename)] for item in ckpt._saved]
        if saved == self._written_best:
            return
        info = {
            "key_metric_name": getattr(engine.state, "key_metric_name", None),
            "best_metric": self._sign * saved[-1][0],
            "best_metric_epoch": int(engine.state.epoch),
            "saved": saved,
        }
        fd, tmp = tempfile.mkstemp(prefix=f".{self.best_metric_path.name}.", suffix=".tmp", dir=self.save_dir)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(info, f, indent=2)
            os.replace(tmp, self.best_metric_path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        self._written_best = saved

    def _adopt_existing_interval_files(self) -> None:
        """On resume, count the interval checkpoints already in ``save_dir`` so ``n_saved`` retention continues."""
        ckpt = self._interval_checkpoint
        if ckpt is None or ckpt.n_saved is None:
            return
        score = "epoch" if self.epoch_level else "iteration"
        prefix = f"{ckpt.filename_prefix}_" if ckpt.filename_prefix else ""
        name = "checkpoint" if len(self.save_dict) > 1 else next(iter(self.save_dict))
        pattern = re.compile(rf"^{re.escape(prefix + name)}_{score}=(\d+)\.pt$")
        found = []
        for p in Path(self.save_dir).iterdir():
            m = pattern.match(p.name)
            if m:
                found.append(ckpt.Item(int(m.group(1)), p.name))
        ckpt._saved = sorted(found, key=lambda item: item.priority)


class ResumeCheckpointLoader(CheckpointLoader):
    """Restore a training run (model, optimizer, scheduler, trainer epoch/iteration) before its first step.

    A :class:`~monai.handlers.CheckpointLoader` that (a) accepts a folder and takes its newest checkpoint,
    (b) does nothing (with a log line) when ``enabled`` is False or, with ``required=False``, when the folder has
    no checkpoint yet, and (c) raises :class:`CorruptCheckpointError` naming the file for a truncated/corrupt one.

    Args:
        load_path: a checkpoint file or a folder of interval checkpoints.
        load_dict: objects to restore, e.g. ``{"network": net, "optimizer": opt, "lr_scheduler": s,
            "trainer": trainer}``.
        enabled: when False the handler does nothing. Defaults to True.
        required: raise ``FileNotFoundError`` when no checkpoint is found. Defaults to False.
        kwargs: ``name``, ``map_location``, ``strict``, ``strict_shape`` as for MONAI's loader.

    Example:
        >>> import tempfile, torch
        >>> loader = ResumeCheckpointLoader(tempfile.mkdtemp(), {"network": torch.nn.Linear(2, 2)})
    """

    def __init__(
        self,
        load_path: str | os.PathLike,
        load_dict: dict,
        enabled: bool = True,
        required: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(load_path=str(load_path), load_dict=load_dict, **kwargs)
        self.enabled = bool(enabled)
        self.required = bool(required)
        self.resolved_path: str | None = None

    def _resolve(self) -> str | None:
        path = Path(self.load_path)
        if path.is_dir() or not path.suffix:
            return latest_checkpoint(path)
        return str(path) if path.exists() else None

    def attach(self, engine: Engine) -> None:
        if self.enabled:
            super().attach(engine)

    def __call__(self, engine: Engine) -> None:
        if not self.enabled:
            return
        path = self._resolve()
        if path is None:
            if self.required:
                raise FileNotFoundError(
                    f"no checkpoint found at {self.load_path}; train first or point 'checkpoint' at a .pt file."
                )
            self.logger.info(f"resume requested but no checkpoint in {self.load_path}; starting from scratch.")
            return
        load_checkpoint(path, map_location=self.map_location)  # validate first: clear error for corrupt files
        self.resolved_path = path
        original, self.load_path = self.load_path, path
        try:
            super().__call__(engine)
        finally:
            self.load_path = original
        self.logger.info(f"loaded {path} (engine at epoch {engine.state.epoch}, iteration {engine.state.iteration})")


class InitialWeightsLoader:
    """Start a training from trained weights: the network only, with a fresh optimizer, schedule and epoch count.

    For fine-tuning (other data) or a warm restart of shipped weights (``models/model.pt``) when the run folder that
    made them is gone. MONAI's :class:`~monai.handlers.CheckpointLoader` would restore the same tensors; this handler
    exists for the check first: weights of another preset or model give one
    :class:`~monai_cnf.bundle.loading.WeightsMismatchError` naming the tensors that do not fit (and a missing or
    corrupt file one clear error), instead of PyTorch's list of keys. A resumed run restores its own checkpoint
    instead (``enabled=False``).

    Args:
        network: the network to initialise (a ``DistributedDataParallel`` wrapper is unwrapped).
        path: a ``.pt`` file: a plain ``state_dict`` or a trainer checkpoint (``{"network": ...}``).
        enabled: when False the handler does nothing. Defaults to True.

    Example:
        >>> import tempfile, torch
        >>> p = tempfile.mktemp(suffix=".pt"); torch.save(torch.nn.Linear(2, 2).state_dict(), p)
        >>> net = torch.nn.Linear(2, 2); InitialWeightsLoader(net, p)(None)
        >>> torch.equal(net.weight, torch.load(p)["weight"])
        True
    """

    def __init__(self, network: torch.nn.Module, path: str | os.PathLike | None, enabled: bool = True) -> None:
        self.network = network
        self.path = None if path in (None, "") else Path(path)
        self.enabled = bool(enabled) and self.path is not None

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        if self.enabled and not engine.has_event_handler(self, Events.STARTED):
            engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine | None) -> None:
        if not self.enabled:
            return
        from monai_cnf.bundle.loading import load_weights

        network = getattr(self.network, "module", self.network)  # DDP / DataParallel
        load_weights(network, self.path, source="this training config", name=f"`init_weights` {self.path}")
        logger.info(f"initialised the network from {self.path} (fresh optimizer and schedule)")
