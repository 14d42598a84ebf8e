"""The two rate functions the decisions are made of: the threshold a set of negative scores
reaches at a given rate, and the TAR a pair-calibrated threshold keeps. Evaluation measures
with the same functions (``evaluation.metrics`` re-exports them), so a threshold chosen here
and a rate reported there cannot disagree.

Conventions as in ``evaluation.metrics``: NaN (no face) is never accepted."""

from __future__ import annotations

import numpy as np


def tar_at_far(scores: np.ndarray, same: np.ndarray, far: float) -> tuple[float, float] | None:
    """(TAR, threshold) at the lowest threshold whose false accept rate is at most ``far``;
    None when there are too few impostor pairs to measure that rate (fewer than 1 / far)."""
    filled = np.where(np.isnan(scores), -np.inf, scores)
    y = same.astype(bool)
    threshold = threshold_at_rate(filled[~y], far)
    if threshold is None:
        return None
    return float((filled[y] >= threshold).mean()), threshold


def threshold_at_rate(negatives: np.ndarray, rate: float) -> float | None:
    """The lowest threshold that at most a fraction ``rate`` of these negative scores (impostor
    pairs, or the best scores of non-mated searches) reach: just above the
    ``floor(rate * n)``-th highest. NaN never reaches it. None when there are fewer than
    1 / ``rate`` scores, too few to measure that rate."""
    ranked = np.sort(np.where(np.isnan(negatives), -np.inf, negatives))[::-1]
    if len(ranked) * rate < 1.0:
        return None
    return float(np.nextafter(ranked[int(np.floor(rate * len(ranked)))], np.inf))
