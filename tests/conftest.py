"""Shared test set-up: offline MLflow, deterministic torch, few threads (CI has 2 cores)."""

from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MONAI_CNF_TESTING", "1")

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_STORES = ("mlruns.db", "mlflow.db", "mlruns")  # MLflow's default stores, relative to the working directory


@pytest.fixture(autouse=True)
def _no_mlflow_store_in_the_repository():
    """A test that tracks must use its own store (tmp_path): none may appear in the repository's root."""
    before = {name for name in _STORES if os.path.exists(os.path.join(_ROOT, name))}
    yield
    new = {name for name in _STORES if os.path.exists(os.path.join(_ROOT, name))} - before
    assert not new, f"this test wrote an MLflow store into the repository: {sorted(new)}"
