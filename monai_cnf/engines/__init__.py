"""Training, sampling and evaluation engines on MONAI's workflows.

- :class:`FlowTrainer`: MONAI ``SupervisedTrainer`` with the likelihood loss (bits/dim or the baseline's loss).
- :class:`SampleInferer`: MONAI ``Inferer`` returning the mean (and std/samples) of N samples, chunked.
- :class:`FlowEvaluator` and the ignite metrics :class:`BitsPerDim`, :class:`MaxFScoreMetric`, :class:`PSNRY`,
  :class:`SSIMY`.
- :class:`AtomicCheckpointSaver`, :class:`ResumeCheckpointLoader`: atomic checkpoints and resume.
- :class:`RichProgressHandler`: a Rich progress bar for ignite engines.
- :func:`warmup_cosine`: warm-up, constant, then optional cosine decay of the learning rate (for ``LambdaLR``).
"""

from __future__ import annotations

from monai_cnf.engines.checkpoint import (
    AtomicCheckpointSaver,
    AtomicDiskSaver,
    CorruptCheckpointError,
    ResumeCheckpointLoader,
    latest_checkpoint,
    load_checkpoint,
)
from monai_cnf.engines.evaluator import PSNRY, SSIMY, BitsPerDim, FlowEvaluator, MaxFScoreMetric
from monai_cnf.engines.inferer import SampleInferer, sliding_window_settings
from monai_cnf.engines.postprocessing import CropToScaledInputd, original_spatial_size
from monai_cnf.engines.progress import RichProgressHandler
from monai_cnf.engines.schedules import warmup_cosine
from monai_cnf.engines.trainer import (
    FlowTrainer,
    bits_per_dim_from_log_prob,
    data_dependent_init,
    needs_data_dependent_init,
)
from monai_cnf.engines.utils import default_checkpoint, drive_data_root, holdout_split, sr_eval_datalist

__all__ = [
    "PSNRY",
    "SSIMY",
    "AtomicCheckpointSaver",
    "AtomicDiskSaver",
    "BitsPerDim",
    "CorruptCheckpointError",
    "CropToScaledInputd",
    "FlowEvaluator",
    "FlowTrainer",
    "MaxFScoreMetric",
    "ResumeCheckpointLoader",
    "RichProgressHandler",
    "SampleInferer",
    "bits_per_dim_from_log_prob",
    "data_dependent_init",
    "default_checkpoint",
    "drive_data_root",
    "holdout_split",
    "latest_checkpoint",
    "load_checkpoint",
    "needs_data_dependent_init",
    "original_spatial_size",
    "sliding_window_settings",
    "sr_eval_datalist",
    "warmup_cosine",
]
