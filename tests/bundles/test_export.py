"""The model zoo's ``ckpt_export`` on the shipped weights: a TorchScript of the deterministic forward (tau = 0).

Tracing (``--use_trace True --input_shape ...``) works and gives exactly the eager forward, at the traced size only
(the multi-scale flow's reshapes are recorded with their sizes); scripting (MONAI's default) cannot compile the
model. Both are documented in the bundles' READMEs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
pytestmark = pytest.mark.slow

#: bundle -> traced input shape (DRIVE: the image; SR: the LR image)
CASES = {"drive_vessel": [1, 3, 64, 64], "super_resolution": [1, 3, 32, 32]}


def _export(bundle: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    root = ROOT / "bundles" / bundle
    args = [sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(out)]
    args += ["--ckpt_file", str(root / "models" / "model.pt"), "--meta_file", str(root / "configs" / "metadata.json")]
    args += ["--config_file", str(root / "configs" / "inference.json"), "--bundle_root", str(root), *extra]
    return subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=300, cwd=root)


@pytest.mark.parametrize("bundle", sorted(CASES))
def test_traced_export_is_the_deterministic_forward_at_its_size(bundle: str, tmp_path: Path) -> None:
    from monai_cnf.bundle.loading import load_trained

    shape = CASES[bundle]
    out = tmp_path / f"{bundle}.ts"
    proc = _export(bundle, out, "--use_trace", "True", "--input_shape", str(shape))
    assert proc.returncode == 0 and out.is_file(), proc.stderr[-3000:]
    traced = torch.jit.load(str(out))
    network = load_trained(ROOT / "bundles" / bundle).network
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(traced(x), network(x), rtol=0, atol=0)
    bigger = torch.rand(*shape[:2], *(2 * s for s in shape[2:]))
    # another size: the recorded sizes no longer fit ("The size of tensor a (32) must match the size of tensor b (16)")
    with pytest.raises(RuntimeError, match=r"size of tensor a \(\d+\) must match the size of tensor b"):
        traced(bigger)


def test_scripted_export_is_not_possible(tmp_path: Path) -> None:
    """MONAI's default (``torch.jit.script``) cannot compile the flow: its Python-level checks and containers are
    outside TorchScript's subset. The READMEs say to trace instead."""
    proc = _export("drive_vessel", tmp_path / "scripted.ts")
    assert proc.returncode != 0 and not (tmp_path / "scripted.ts").exists()
    err = proc.stderr
    assert "torch.jit" in err or "TorchScript" in err or "annotation" in err, err[-2000:]
