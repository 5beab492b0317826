"""Calibration metrics against hand-computed values and direct formulas."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from monai_cnf.metrics import (
    expected_calibration_error,
    generalized_energy_distance,
    hungarian_matched_iou,
    pairwise_iou,
    reliability_bins,
    sample_set_metrics,
)


def test_reliability_bins_and_ece_by_hand() -> None:
    prob = np.array([0.0, 0.1, 0.15, 0.5, 0.55, 0.9, 1.0, 0.95])
    label = np.array([0, 0, 1, 1, 0, 1, 1, 1])
    mask = np.array([1, 1, 1, 1, 1, 1, 1, 0])  # the last pixel is ignored
    b = reliability_bins(prob, label, mask, num_bins=4)
    # bins [0,.25): 0, .1, .15 | [.25,.5): - | [.5,.75): .5, .55 | [.75,1]: .9, 1.0
    assert b.counts.tolist() == [3, 0, 2, 2]
    np.testing.assert_allclose(b.confidence, [0.25 / 3, np.nan, 0.525, 0.95])
    np.testing.assert_allclose(b.accuracy, [1 / 3, np.nan, 0.5, 1.0])
    expected = (3 * abs(1 / 3 - 0.25 / 3) + 2 * abs(0.5 - 0.525) + 2 * abs(1.0 - 0.95)) / 7
    assert b.ece == pytest.approx(expected)
    assert expected_calibration_error(prob, label, mask, num_bins=4) == pytest.approx(expected)


def test_reliability_edges_of_sample_means_go_up() -> None:
    # means of S=100 samples sit exactly on the bin edges k/10; each must land in bin k (not k-1)
    s = 100
    prob = np.arange(0, s + 1, 10) / s
    b = reliability_bins(prob, np.zeros_like(prob), num_bins=10)
    assert b.counts.tolist() == [1] * 9 + [2]  # 1.0 joins the last bin


def test_reliability_accumulates_over_images() -> None:
    g = np.random.default_rng(0)
    p1, p2 = g.random((4, 5)), g.random((3, 3))
    y1, y2 = g.random((4, 5)) < p1, g.random((3, 3)) < p2
    total = reliability_bins(p1, y1) + reliability_bins(p2, y2)
    pooled = reliability_bins([p1, p2], [y1, y2])
    np.testing.assert_array_equal(total.counts, pooled.counts)
    assert total.ece == pytest.approx(pooled.ece)


def test_perfectly_calibrated_has_zero_ece() -> None:
    # in every bin the frequency of positives equals the (constant) probability
    prob = np.repeat([0.05, 0.25, 0.75], 20)
    label = np.concatenate([np.r_[1, np.zeros(19)], np.r_[np.ones(5), np.zeros(15)], np.r_[np.ones(15), np.zeros(5)]])
    assert expected_calibration_error(prob, label) == pytest.approx(0.0, abs=1e-12)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


def test_pairwise_iou_direct_and_empty_convention() -> None:
    g = np.random.default_rng(2)
    a = g.random((3, 4, 5)) < 0.4
    b = g.random((2, 4, 5)) < 0.4
    b[1] = False
    a[2] = False
    mask = g.random((4, 5)) < 0.7
    got = pairwise_iou(a, b, mask)
    for i, j in itertools.product(range(3), range(2)):
        assert got[i, j] == pytest.approx(_iou(a[i][mask], b[j][mask]))
    assert got[2, 1] == 1.0  # both empty


def test_ged_by_hand_and_direct() -> None:
    samples = np.array([[1, 0], [0, 1]])
    annotations = np.array([[1, 0]])
    # d_sa = [0, 1] -> 2 * 0.5; d_ss = [[0, 1], [1, 0]] -> mean .5; d_aa = 0
    assert generalized_energy_distance(samples, annotations) == pytest.approx(0.5)
    # identical sets -> 0
    assert generalized_energy_distance(samples, samples) == pytest.approx(0.0)
    g = np.random.default_rng(3)
    s = g.random((5, 3, 4)) < 0.5
    a = g.random((2, 3, 4)) < 0.5

    def d(u: np.ndarray, v: np.ndarray) -> float:
        return 1.0 - _iou(u, v)

    direct = (
        2 * np.mean([d(x, y) for x in s for y in a])
        - np.mean([d(x, y) for x in s for y in s])
        - np.mean([d(x, y) for x in a for y in a])
    )
    assert generalized_energy_distance(s, a) == pytest.approx(direct)


def test_hungarian_matched_iou_by_hand_and_brute_force() -> None:
    samples = np.array([[1, 1, 0], [0, 0, 1]])
    annotations = np.array([[0, 0, 1], [1, 0, 0]])
    assert hungarian_matched_iou(samples, annotations) == pytest.approx(0.75)
    # S=3, A=2 -> lcm 6: brute force over all matchings of the repeated sets
    g = np.random.default_rng(4)
    s = g.random((3, 6)) < 0.5
    a = g.random((2, 6)) < 0.5
    rep_s = [s[i % 3] for i in range(6)]
    rep_a = [a[j % 2] for j in range(6)]
    best = max(np.mean([_iou(rep_s[i], rep_a[p[i]]) for i in range(6)]) for p in itertools.permutations(range(6)))
    assert hungarian_matched_iou(s, a) == pytest.approx(best)


def test_calibration_bad_input() -> None:
    with pytest.raises(ValueError, match="prob"):
        reliability_bins(np.array([0.5, 1.2]), np.array([0, 1]))
    with pytest.raises(ValueError, match="labels"):
        expected_calibration_error(np.array([0.5, 0.2]), np.array([0, 2]))
    with pytest.raises(ValueError, match="num_bins"):
        reliability_bins(np.array([0.5]), np.array([1]), num_bins=0)
    with pytest.raises(ValueError, match="shape"):
        generalized_energy_distance(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="samples"):
        hungarian_matched_iou(np.full((2, 3), 0.5), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="mask"):
        generalized_energy_distance(np.zeros((2, 3)), np.zeros((2, 3)), mask=np.ones(4))


def test_iou_matmul_fallback_matches_popcount(monkeypatch: pytest.MonkeyPatch) -> None:
    g = np.random.default_rng(5)
    a = g.random((4, 9, 11)) < 0.3  # 99 pixels: not a multiple of 64, exercises the padding
    b = g.random((3, 9, 11)) < 0.3
    fast = pairwise_iou(a, b)
    if hasattr(np, "bitwise_count"):
        monkeypatch.delattr(np, "bitwise_count")
    np.testing.assert_array_equal(pairwise_iou(a, b), fast)


def test_sample_set_metrics_equals_separate_calls() -> None:
    g = np.random.default_rng(6)
    s = g.random((7, 5, 6)) < 0.4
    a = g.random((2, 5, 6)) < 0.4
    mask = g.random((5, 6)) < 0.8
    ged, hm = sample_set_metrics(s, a, mask)
    assert ged == pytest.approx(generalized_energy_distance(s, a, mask))
    assert hm == pytest.approx(hungarian_matched_iou(s, a, mask))
