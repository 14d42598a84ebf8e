"""Verification metrics over pair scores.

Conventions: a pair is accepted as "same person" when ``score >= threshold``. A pair whose
score is NaN could not be scored (no face found in one of its images): it counts as wrong in
accuracy whatever the threshold, and as never accepted in ROC, AUC and TAR@FAR (a genuine pair
missed, an impostor pair rightly rejected).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facegallery.decisions.rates import threshold_at_rate

FAR_TARGETS = (0.1, 0.01, 0.001)


@dataclass(frozen=True)
class KFoldResult:
    """Per-fold test accuracy, each with the threshold chosen on the other folds."""

    accuracies: np.ndarray
    thresholds: np.ndarray

    @property
    def mean(self) -> float:
        return float(self.accuracies.mean())

    @property
    def std(self) -> float:
        return float(self.accuracies.std())


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold that maximises accuracy on these (valid) pairs, found in O(n log n) by
    sweeping every cut between distinct sorted scores; the threshold is the cut's midpoint."""
    order = np.argsort(scores, kind="stable")
    s, y = scores[order], same[order].astype(bool)
    # Cutting before index k accepts s[k:]: correct = genuines at >= k + impostors at < k.
    genuine_at_or_after = np.concatenate([np.cumsum(y[::-1])[::-1], [0]])
    impostor_before = np.concatenate([[0], np.cumsum(~y)])
    correct = genuine_at_or_after + impostor_before
    cuts = np.concatenate([[True], s[1:] > s[:-1], [True]])  # never split tied scores
    correct = np.where(cuts, correct, -1)
    k = int(np.argmax(correct))
    if k == 0:
        return float(s[0]) - 1e-6
    if k == len(s):
        return float(s[-1]) + 1e-6
    return float((s[k - 1] + s[k]) / 2.0)


def accuracy(scores: np.ndarray, same: np.ndarray, threshold: float) -> float:
    """Fraction of pairs decided correctly; NaN scores are always wrong."""
    valid = ~np.isnan(scores)
    accepted = np.zeros(len(scores), dtype=bool)
    accepted[valid] = scores[valid] >= threshold
    correct = valid & (accepted == same.astype(bool))
    return float(correct.mean()) if len(scores) else 0.0


def kfold_accuracy(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> KFoldResult:
    """Leave-one-fold-out accuracy: the threshold is chosen on every other fold's valid pairs
    and tested on the held-out fold (the LFW protocol, Huang et al. 2007). Pairs of fold -1
    belong to no fold and take no part."""
    accuracies, thresholds = [], []
    for fold in np.unique(folds[folds >= 0]):
        train = (folds >= 0) & (folds != fold) & ~np.isnan(scores)
        threshold = best_threshold(scores[train], same[train])
        test = folds == fold
        accuracies.append(accuracy(scores[test], same[test], threshold))
        thresholds.append(threshold)
    return KFoldResult(np.array(accuracies), np.array(thresholds))


def roc_curve(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FAR, TAR) at every distinct threshold, from accepting nothing to accepting all."""
    filled = np.where(np.isnan(scores), -np.inf, scores)
    y = same.astype(bool)
    order = np.argsort(-filled, kind="stable")
    s, y = filled[order], y[order]
    last_of_tie = np.concatenate([s[1:] != s[:-1], [True]])
    tar = np.cumsum(y)[last_of_tie] / max(1, int(y.sum()))
    far = np.cumsum(~y)[last_of_tie] / max(1, int((~y).sum()))
    return np.concatenate([[0.0], far]), np.concatenate([[0.0], tar])


def auc(scores: np.ndarray, same: np.ndarray) -> float:
    """Area under the ROC curve (trapezoids over every distinct threshold)."""
    far, tar = roc_curve(scores, same)
    return float(np.trapezoid(tar, far))


FPIR_TARGETS = (0.003, 0.01, 0.1)


def fnir_at_fpir(
    mated_top_user_ok: np.ndarray,
    mated_top_score: np.ndarray,
    nonmated_top_score: np.ndarray,
    fpir: float,
) -> float | None:
    """FNIR at the threshold where a fraction ``fpir`` of non-mated searches return a
    candidate (NIST FRVT 1:N, rank 1): a mated search is a miss unless its top candidate is
    the mate *and* scores at least the threshold. NaN scores (no face) never pass. None when
    there are fewer than 1 / ``fpir`` non-mated searches."""
    threshold = threshold_at_rate(nonmated_top_score, fpir)
    if threshold is None or len(mated_top_score) == 0:
        return None
    return open_set_rates(threshold, mated_top_user_ok, mated_top_score, nonmated_top_score)[1]


def open_set_rates(
    threshold: float,
    mated_top_user_ok: np.ndarray,
    mated_top_score: np.ndarray,
    nonmated_top_score: np.ndarray,
) -> tuple[float, float]:
    """(FPIR, FNIR) of the decision at ``threshold``: a non-mated search is a false positive
    when its top candidate reaches it; a mated search is a miss unless its top candidate is
    the mate and reaches it. NaN scores (no face) never reach it."""
    nonmated = np.where(np.isnan(nonmated_top_score), -np.inf, nonmated_top_score)
    mated = np.where(np.isnan(mated_top_score), -np.inf, mated_top_score)
    hits = mated_top_user_ok & (mated >= threshold)
    fpir = float((nonmated >= threshold).mean()) if len(nonmated) else 0.0
    return fpir, float(1.0 - hits.mean()) if len(mated) else 0.0
