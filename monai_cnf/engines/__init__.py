"""Training, sampling and evaluation engines on MONAI's workflows.

- :class:`FlowTrainer`: MONAI ``SupervisedTrainer`` with the likelihood loss (bits/dim or the baseline's loss).
- :class:`SampleInferer`: MONAI ``Inferer`` returning the mean (and std/samples) of N samples, chunked.
- :class:`FlowEvaluator` and the ignite metrics :class:`BitsPerDim`, :class:`MaxFScoreMetric`, :class:`PSNRY`,
  :class:`SSIMY`.
- :class:`AtomicCheckpointSaver`, :class:`ResumeCheckpointLoader`: atomic checkpoints and resume;
  :class:`InitialWeightsLoader`: start a training from trained weights (``init_weights``).
- :mod:`~monai_cnf.engines.distributed`: ``torchrun``/DDP helpers of the multi-GPU overlays (process group, rank 0,
  :class:`GatheredMetric` for sharded validation); :class:`FlowObjective`, the training pass that DDP wraps.
- :class:`RichProgressHandler`: a Rich progress bar for ignite engines.
- :func:`warmup_cosine`: warm-up, constant, then optional cosine decay of the learning rate (for ``LambdaLR``).
"""

from __future__ import annotations

from monai_cnf.engines.checkpoint import (
    AtomicCheckpointSaver,
    AtomicDiskSaver,
    CorruptCheckpointError,
    InitialWeightsLoader,
    ResumeCheckpointLoader,
    latest_checkpoint,
    load_checkpoint,
)
from monai_cnf.engines.distributed import (
    GatheredMetric,
    destroy_distributed,
    gather_metrics,
    get_rank,
    get_world_size,
    init_distributed,
    is_main_process,
    local_device,
    main_process_only,
)
from monai_cnf.engines.evaluator import PSNRY, SSIMY, BitsPerDim, FlowEvaluator, MaxFScoreMetric
from monai_cnf.engines.inferer import SampleInferer, sliding_window_settings
from monai_cnf.engines.postprocessing import CropToScaledInputd, original_spatial_size
from monai_cnf.engines.progress import RichProgressHandler
from monai_cnf.engines.schedules import warmup_cosine
from monai_cnf.engines.trainer import (
    FlowObjective,
    FlowTrainer,
    amp_settings,
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
    "FlowObjective",
    "FlowTrainer",
    "GatheredMetric",
    "InitialWeightsLoader",
    "MaxFScoreMetric",
    "ResumeCheckpointLoader",
    "RichProgressHandler",
    "SampleInferer",
    "amp_settings",
    "bits_per_dim_from_log_prob",
    "data_dependent_init",
    "default_checkpoint",
    "destroy_distributed",
    "drive_data_root",
    "gather_metrics",
    "get_rank",
    "get_world_size",
    "holdout_split",
    "init_distributed",
    "is_main_process",
    "latest_checkpoint",
    "load_checkpoint",
    "local_device",
    "main_process_only",
    "needs_data_dependent_init",
    "original_spatial_size",
    "sliding_window_settings",
    "sr_eval_datalist",
    "warmup_cosine",
]
