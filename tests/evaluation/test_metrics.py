"""Verification metrics against brute force and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from facegallery.decisions.rates import tar_at_far
from facegallery.evaluation.metrics import (
    accuracy,
    auc,
    best_threshold,
    kfold_accuracy,
    roc_curve,
)


def _brute_best_accuracy(scores: np.ndarray, same: np.ndarray) -> float:
    candidates = np.concatenate([[-np.inf], np.unique(scores), [np.inf]])
    return max(float(((scores >= t) == same).mean()) for t in candidates)


@pytest.mark.parametrize("seed", range(5))
def test_best_threshold_reaches_the_brute_force_optimum(seed: int) -> None:
    rng = np.random.default_rng(seed)
    same = rng.random(300) < 0.5
    scores = np.round(rng.normal(same * 1.0, 0.8), 1)  # rounding makes ties
    threshold = best_threshold(scores, same)
    assert accuracy(scores, same, threshold) == pytest.approx(_brute_best_accuracy(scores, same))


def test_perfect_separation() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    same = np.array([0, 0, 0, 1, 1, 1], bool)
    assert 0.3 < best_threshold(scores, same) < 0.7
    assert auc(scores, same) == 1.0
    assert tar_at_far(scores, same, 0.1) is None  # 3 impostors cannot measure 10%


def test_failed_pairs_are_wrong_in_accuracy_and_never_accepted() -> None:
    scores = np.array([0.9, np.nan, 0.1, np.nan])
    same = np.array([1, 1, 0, 0], bool)
    assert accuracy(scores, same, 0.5) == 0.5  # both NaN pairs wrong, even the impostor
    far, tar = roc_curve(scores, same)
    assert tar.max() == 1.0 and far[-1] == 1.0  # at -inf everything is accepted
    assert tar[far == 0].max() == 0.5  # before any impostor is accepted, one genuine is


def test_kfold_thresholds_come_from_other_folds() -> None:
    # Fold 0's pairs alone would want a threshold near 0.95; the other folds near 0.5.
    scores = np.array([0.96, 0.94, 0.6, 0.4] + [0.6, 0.4] * 9)
    same = np.array([1, 0, 1, 0] + [1, 0] * 9, bool)
    folds = np.array([0, 0, 0, 0] + [i for i in range(1, 10) for _ in range(2)])
    result = kfold_accuracy(scores, same, folds)
    assert len(result.accuracies) == 10
    assert result.thresholds[0] == pytest.approx(0.5)
    assert result.accuracies[0] == 0.75  # 0.94 impostor accepted at 0.5
    assert result.accuracies[1:].tolist() == [1.0] * 9


def test_tar_at_far_counts() -> None:
    rng = np.random.default_rng(7)
    impostor = rng.normal(0, 1, 1000)
    genuine = rng.normal(3, 1, 1000)
    scores = np.concatenate([genuine, impostor])
    same = np.concatenate([np.ones(1000, bool), np.zeros(1000, bool)])
    for far in (0.1, 0.01, 0.001):
        measured = tar_at_far(scores, same, far)
        assert measured is not None
        tar, threshold = measured
        assert (impostor >= threshold).mean() <= far
        assert tar == pytest.approx((genuine >= threshold).mean())
    low, high = tar_at_far(scores, same, 0.001), tar_at_far(scores, same, 0.1)
    assert low is not None and high is not None and low[0] < high[0]


def test_auc_of_random_scores_is_near_half() -> None:
    rng = np.random.default_rng(11)
    assert auc(rng.random(4000), rng.random(4000) < 0.5) == pytest.approx(0.5, abs=0.03)
