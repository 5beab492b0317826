"""Small helpers the bundles' JSON configs call (data roots, validation hold-out, checkpoint choice)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai_cnf.bundle.run_folder import default_checkpoint  # the bundles' configs call it from here

__all__ = ["default_checkpoint", "drive_data_root", "holdout_split", "sr_eval_datalist"]

logger = logging.getLogger("monai_cnf.bundle")


def drive_data_root(
    dataset_dir: str | os.PathLike | None,
    output_dir: str | os.PathLike,
    num_train: int = 20,
    num_test: int = 20,
    image_size: Sequence[int] = (584, 565),
    seed: int = 0,
) -> str:
    """The DRIVE folder a bundle trains on: ``dataset_dir``, or a synthetic retina set generated under ``output_dir``.

    With ``dataset_dir=None`` the synthetic set (``monai_cnf.data.make_synthetic_drive``, DRIVE's own layout) is
    written once to ``output_dir/synthetic_drive`` and reused; a warning says so, because numbers measured on it are
    not DRIVE results.

    Args:
        dataset_dir: a DRIVE folder (with ``training/`` and ``test/``) or None.
        output_dir: the run folder.
        num_train: synthetic training images. Defaults to 20 (as DRIVE).
        num_test: synthetic test images. Defaults to 20 (as DRIVE).
        image_size: synthetic ``(H, W)``. Defaults to DRIVE's ``(584, 565)``.
        seed: synthetic seed. Defaults to 0.

    Example:
        >>> import tempfile
        >>> root = tempfile.mkdtemp()  # stands for a DRIVE folder
        >>> drive_data_root(root, "/tmp/run") == root
        True
        >>> drive_data_root("/no/such/DRIVE", "/tmp/run")
        Traceback (most recent call last):
        ...
        FileNotFoundError: dataset_dir '/no/such/DRIVE' does not exist; ...
    """
    if dataset_dir not in (None, "", "None", "null"):
        path = Path(dataset_dir).expanduser()  # type: ignore[arg-type]
        if not path.is_dir():
            raise FileNotFoundError(
                f"dataset_dir {str(path)!r} does not exist; pass a DRIVE folder (training/, test/) or null for the "
                "synthetic retina set."
            )
        return str(path)
    from monai_cnf.data import make_synthetic_drive

    root = Path(output_dir) / "synthetic_drive"
    logger.warning(
        "dataset_dir is null: using the SYNTHETIC retina set in %s (%d training, %d test images of %s); "
        "set dataset_dir to a DRIVE folder for real data.",
        root,
        num_train,
        num_test,
        "x".join(str(int(s)) for s in image_size),
    )
    from monai_cnf.engines.distributed import main_process_first

    with main_process_first():  # under torchrun: rank 0 writes the set, the other ranks then find it complete
        make_synthetic_drive(root, seed=seed, num_train=num_train, num_test=num_test, image_size=tuple(image_size))
    return str(root)


def holdout_split(datalist: Sequence[Any], num_val: int, part: str) -> list[Any]:
    """Deterministic training/validation split of a datalist: the LAST ``num_val`` items are the validation part.

    DRIVE has no validation split, so the bundles hold out the last training images (ids 37-40 with
    ``num_val=4``). At least one item always stays in the training part.

    Args:
        datalist: the items, in a fixed order.
        num_val: number of held-out items (clipped to ``len - 1``; 0 gives an empty validation part).
        part: ``"train"`` or ``"validation"``.

    Example:
        >>> holdout_split([1, 2, 3, 4, 5], 2, "train"), holdout_split([1, 2, 3, 4, 5], 2, "validation")
        ([1, 2, 3], [4, 5])
    """
    if part not in ("train", "validation"):
        raise ValueError(f"part must be 'train' or 'validation', got {part!r}.")
    items = list(datalist)
    n_val = max(0, min(int(num_val), len(items) - 1))
    cut = len(items) - n_val
    return items[:cut] if part == "train" else items[cut:]


def sr_eval_datalist(
    split: str, eval_dir: str | os.PathLike | None, all_datalist: Sequence[Any], num_val: int
) -> list[Any]:
    """Datalist for evaluating the SR bundle on a split.

    ``"test"``: the HR images in ``eval_dir`` (e.g. Set5/Set14/BSD100); with ``eval_dir=None`` the held-out
    images of the training data (logged). ``"validation"``: the held-out images. ``"training"``: the rest.

    Example:
        >>> sr_eval_datalist("validation", None, [1, 2, 3], 1)
        [3]
    """
    key = str(split).lower()
    if key not in ("test", "validation", "training", "train"):
        raise ValueError(f"split must be 'test', 'validation' or 'training', got {split!r}.")
    if key == "test" and eval_dir not in (None, "", "None", "null"):
        from monai_cnf.data import sr_datalist

        return sr_datalist(eval_dir)  # type: ignore[arg-type]
    if key == "test":
        logger.warning("eval_dir is null: evaluating on the %d held-out training images (validation part).", num_val)
    return holdout_split(all_datalist, num_val, "train" if key in ("training", "train") else "validation")
