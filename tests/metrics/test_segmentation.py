"""Segmentation metrics against brute-force counting on tiny arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_cnf.metrics import binary_precision_recall, max_f_score, pr_curve, sample_precision_recall


def _brute_pr(scores: np.ndarray, y: np.ndarray) -> dict[float, tuple[float, float]]:
    out = {}
    for t in np.unique(scores):
        pred = scores >= t
        tp = np.sum(pred & y)
        out[float(t)] = (tp / pred.sum(), tp / y.sum())
    return out


def _images() -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    g = np.random.default_rng(1)
    probs, labels, masks = [], [], []
    for shape in [(5, 6), (4, 7)]:  # different sizes, like padded/unpadded images
        y = g.random(shape) < 0.3
        p = np.clip(0.5 * y + 0.6 * g.random(shape), 0, 1).round(2)
        m = g.random(shape) < 0.8
        probs.append(p), labels.append(y.astype(np.float32)), masks.append(m)
    return probs, labels, masks


def test_pr_curve_pooled_inside_mask_matches_brute_force() -> None:
    probs, labels, masks = _images()
    precision, recall, thresholds = pr_curve(probs, labels, masks)
    scores = np.concatenate([p[m] for p, m in zip(probs, masks, strict=True)])
    y = np.concatenate([lab[m] > 0 for lab, m in zip(labels, masks, strict=True)])
    brute = _brute_pr(scores, y)
    assert len(thresholds) == len(brute)
    for p, r, t in zip(precision[:-1], recall[:-1], thresholds, strict=True):
        assert (p, r) == pytest.approx(brute[float(t)])
    assert precision[-1] == 1.0 and recall[-1] == 0.0
    # without the mask every pixel is pooled, and the curve is that of all pixels, not the masked one's
    p_all, r_all, t_all = pr_curve(probs, labels)
    brute_all = _brute_pr(
        np.concatenate([p.ravel() for p in probs]), np.concatenate([lab.ravel() > 0 for lab in labels])
    )
    assert len(t_all) == len(brute_all)
    for p, r, t in zip(p_all[:-1], r_all[:-1], t_all, strict=True):
        assert (p, r) == pytest.approx(brute_all[float(t)])
    assert any(brute_all[t] != pytest.approx(brute[t]) for t in brute if t in brute_all)


def test_max_f_score_hand_example() -> None:
    # scores 0.9(+) 0.6(-) 0.4(+) 0.1(-): t=0.9 P=1 R=.5 F=2/3; t=0.6 P=.5 R=.5; t=0.4 P=2/3 R=1 F=0.8; t=0.1 F=2/3
    res = max_f_score(torch.tensor([0.9, 0.6, 0.4, 0.1]), torch.tensor([1.0, 0.0, 1.0, 0.0]))
    assert res.f_score == pytest.approx(0.8)
    assert float(res) == pytest.approx(0.8)
    assert res.threshold == pytest.approx(0.4)
    assert (res.precision, res.recall) == pytest.approx((2 / 3, 1.0))


def test_max_f_score_matches_brute_force() -> None:
    probs, labels, masks = _images()
    scores = np.concatenate([p[m] for p, m in zip(probs, masks, strict=True)])
    y = np.concatenate([lab[m] > 0 for lab, m in zip(labels, masks, strict=True)])
    best = max(2 * p * r / (p + r) for p, r in _brute_pr(scores, y).values() if p + r > 0)
    assert max_f_score(probs, labels, masks).f_score == pytest.approx(best)
    # stacked arrays are pooled the same way as lists: two different images of one shape
    second_p, second_y = np.flipud(probs[0]) ** 2, 1.0 - labels[0]
    stacked = max_f_score(np.stack([probs[0], second_p]), np.stack([labels[0], second_y]))
    listed = max_f_score([probs[0], second_p], [labels[0], second_y])
    pooled = _brute_pr(
        np.concatenate([probs[0].ravel(), second_p.ravel()]),
        np.concatenate([labels[0].ravel() > 0, second_y.ravel() > 0]),
    )
    best_pooled = max(2 * p * r / (p + r) for p, r in pooled.values() if p + r > 0)
    assert stacked.f_score == pytest.approx(listed.f_score) == pytest.approx(best_pooled)
    assert best_pooled != pytest.approx(max_f_score(probs[0], labels[0]).f_score)  # the second image counts


def test_max_f_score_ties_go_to_the_highest_threshold() -> None:
    # t=0.8: P=1, R=1/2, F=2/3; t=0.5: P=1/2, R=1/2, F=1/2; t=0.2: P=1/2, R=1, F=2/3 -> a tie, 0.8 wins
    res = max_f_score(torch.tensor([0.8, 0.5, 0.2, 0.2]), torch.tensor([1.0, 0.0, 1.0, 0.0]))
    assert res.f_score == pytest.approx(2 / 3)
    assert res.threshold == pytest.approx(0.8)
    assert (res.precision, res.recall) == pytest.approx((1.0, 0.5))


def test_sample_precision_recall_and_grader() -> None:
    label = np.array([[1, 1, 0], [0, 1, 0]])
    mask = np.array([[1, 1, 1], [1, 1, 0]])
    samples = np.array(
        [
            [[1, 0, 0], [0, 1, 1]],  # inside mask: TP 2, FP 0 (the FP is outside the mask) -> P 1, R 2/3
            [[1, 1, 1], [1, 1, 0]],  # TP 3, FP 2 -> P 3/5, R 1
            [[0, 0, 0], [0, 0, 1]],  # nothing predicted inside the mask -> P 1 (convention), R 0
        ]
    )
    pts = sample_precision_recall(samples, label, mask)
    np.testing.assert_allclose(pts, [[1.0, 2 / 3], [0.6, 1.0], [1.0, 0.0]])
    assert binary_precision_recall(samples[1], label, mask) == pytest.approx((0.6, 1.0))
    # without the mask the pixel outside counts as a false positive
    assert binary_precision_recall(samples[0], label) == pytest.approx((2 / 3, 2 / 3))
    # empty reference: recall 1 by convention
    assert binary_precision_recall(samples[0], np.zeros_like(label))[1] == 1.0


def test_segmentation_bad_input() -> None:
    p = np.array([0.2, 0.8])
    with pytest.raises(ValueError, match="labels"):
        pr_curve(p, np.array([0.0, 0.5]))
    with pytest.raises(ValueError, match="prob_maps"):
        pr_curve(np.array([0.2, 1.5]), np.array([0, 1]))
    with pytest.raises(ValueError, match="prob_maps"):
        pr_curve(np.array([0.2, np.nan]), np.array([0, 1]))
    with pytest.raises(ValueError, match="shape"):
        pr_curve(p, np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="labels"):
        max_f_score(p, np.array([0, 0]))
    with pytest.raises(ValueError, match="masks"):
        pr_curve([p, p], [np.array([0, 1])] * 2, [np.array([1, 1])])
    with pytest.raises(ValueError, match="samples"):
        sample_precision_recall(np.array([[0, 1, 1]]), np.array([0, 1]))
    with pytest.raises(ValueError, match="samples"):
        sample_precision_recall(np.array([[0, 0.3]]), np.array([0, 1]))
