"""Unit tests of the CNF sample-disagreement scores (main env, no MONAI Label needed)."""

from __future__ import annotations

import math

import pytest
import torch

from monai_cnf.label import (
    binary_entropy,
    fov_mask,
    monailabel_command,
    monailabel_env,
    rank_by_score,
    sample_disagreement,
    uncertainty_score,
)


def _samples(probs: torch.Tensor, num_samples: int, seed: int) -> torch.Tensor:
    """Binary samples (S, B, 1, H, W) with P(y=1) = probs (B, 1, H, W)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand((num_samples, *probs.shape), generator=g) < probs).float()


def test_binary_entropy_values():
    p = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    expected = [0.0, -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), math.log(2), 0.0]
    assert binary_entropy(p).tolist() == pytest.approx(expected, abs=1e-10)


def test_scores_from_hand_made_samples():
    # 4 samples of a 1x2 image: pixel 0 splits 2/2 (p=0.5), pixel 1 has 1/4 ones (p=0.25)
    s = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]).reshape(4, 1, 1, 1, 2)
    h = (math.log(2) - (0.25 * math.log(0.25) + 0.75 * math.log(0.75))) / 2
    assert sample_disagreement(s, method="entropy").item() == pytest.approx(h, abs=1e-12)
    assert sample_disagreement(s, method="variance").item() == pytest.approx((0.25 + 0.1875) / 2, abs=1e-12)
    # restricted to pixel 1 only
    mask = torch.tensor([[[[False, True]]]])
    assert sample_disagreement(s, mask=mask, method="variance").item() == pytest.approx(0.1875, abs=1e-12)


def test_variance_from_std_matches_samples():
    probs = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    s = _samples(probs, 16, seed=4) * 0.7 + 0.1  # non-binary values: the std path must be used
    mean, std = s.mean(0), s.std(0, unbiased=False)
    expected = (std.double() ** 2).mean(dim=(1, 2, 3))
    assert uncertainty_score(mean, method="variance", std=std).tolist() == pytest.approx(expected.tolist(), rel=1e-6)
    assert sample_disagreement(s, method="variance").tolist() == pytest.approx(expected.tolist(), rel=1e-6)


@pytest.mark.parametrize("method", ["entropy", "variance"])
def test_more_disagreeing_image_ranks_first(method):
    # three 16x16 "images": confident (p in {0.02, 0.98}), medium (p=0.8 vessels), maximally unsure (p=0.5)
    g = torch.Generator().manual_seed(0)
    vessels = torch.rand(1, 1, 16, 16, generator=g) < 0.3
    confident = torch.where(vessels, 0.98, 0.02)
    medium = torch.where(vessels, 0.8, 0.2)
    unsure = torch.full_like(confident, 0.5)
    probs = torch.cat([confident, unsure, medium])
    scores = sample_disagreement(_samples(probs, 32, seed=1), method=method)
    ranking = rank_by_score({"confident": scores[0].item(), "unsure": scores[1].item(), "medium": scores[2].item()})
    assert ranking == ["unsure", "medium", "confident"]


def test_mask_excludes_outside_fov():
    # image 0 disagrees on 8 pixels outside its FOV, image 1 on 4 pixels inside: the FOV mask flips the ranking
    s = torch.zeros(4, 2, 1, 4, 4)
    s[::2, 0, :, :, :2] = 1  # image 0: columns 0-1 (outside the FOV) split 2/2
    s[::2, 1, :, :2, 2:] = 1  # image 1: rows 0-1 of columns 2-3 (inside the FOV) split 2/2
    image = torch.zeros(2, 3, 4, 4)
    image[:, 0, :, 2:] = 0.6  # FOV = columns 2-3 (red channel above 0.1)
    mask = fov_mask(image)
    assert mask.shape == (2, 1, 4, 4) and mask.sum().item() == 16
    no_mask = sample_disagreement(s)
    assert no_mask.tolist() == pytest.approx([0.5 * math.log(2), 0.25 * math.log(2)], abs=1e-12)
    with_mask = sample_disagreement(s, mask=mask)
    assert with_mask.tolist() == pytest.approx([0.0, 0.5 * math.log(2)], abs=1e-12)


def test_rank_by_score_ties_and_nan():
    assert rank_by_score({"b": 1.0, "a": 1.0, "c": float("nan"), "d": 2.0}) == ["d", "a", "b", "c"]


def test_argument_errors():
    with pytest.raises(ValueError, match="method"):
        uncertainty_score(torch.zeros(1, 1, 2, 2), method="mutual")
    with pytest.raises(ValueError, match="mask is empty"):
        uncertainty_score(torch.zeros(1, 1, 2, 2), mask=torch.zeros(1, 1, 2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="samples"):
        sample_disagreement(torch.zeros(2, 2, 2))
    with pytest.raises(ValueError, match="channel"):
        fov_mask(torch.zeros(1, 1, 2, 2), channel=2)


def test_monailabel_command_offline_and_local(tmp_path):
    cmd = monailabel_command(tmp_path / "app", tmp_path / "studies", "drive_vessel", port=8123, executable="ml")
    assert cmd[:2] == ["ml", "start_server"]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--port") + 1] == "8123"
    i = cmd.index("models")
    assert cmd[i - 1] == "--conf" and cmd[i + 1] == "drive_vessel"
    env = monailabel_env({"PYTHONPATH": "/x"})
    assert env["MONAI_LABEL_AUTO_UPDATE_SCORING"] == "false"
    assert env["PYTHONPATH"].endswith("/x") and env["PYTHONPATH"] != "/x"
    with pytest.raises(ValueError, match="port"):
        monailabel_command("a", "s", "b", port=0)
    with pytest.raises(ValueError, match="bundle"):
        monailabel_command("a", "s", "bundles/drive_vessel")
