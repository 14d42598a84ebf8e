"""Thresholds: calibration, the operator's file over the shipped defaults, overrides."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from facegallery.core.config import MatchingSettings
from facegallery.core.errors import FailedPrecondition, InvalidInput
from facegallery.decisions.thresholds import SHIPPED, Thresholds, calibrate, decide
from facegallery.gallery import Candidate


def _pairs(n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    same = np.arange(n) % 2 == 0
    scores = np.where(same, rng.normal(0.6, 0.1, n), rng.normal(0.1, 0.1, n))
    return scores, same


def test_calibration_meets_the_far_target() -> None:
    scores, same = _pairs()
    result = calibrate(scores, same, 0.01, "m", "synthetic")
    assert result.far <= 0.01 and result.far_target == 0.01
    assert (scores[~same] >= result.threshold).mean() == pytest.approx(result.far)
    assert (scores[same] >= result.threshold).mean() == pytest.approx(result.tar, abs=1e-6)
    assert calibrate(scores, same, 0.1, "m", "s").threshold < result.threshold


def test_calibration_needs_enough_impostors() -> None:
    scores, same = _pairs(100)
    with pytest.raises(InvalidInput, match="at least 1000"):
        calibrate(scores, same, 0.001, "m", "s")
    with pytest.raises(InvalidInput, match="between 0 and 1"):
        calibrate(scores, same, 1.5, "m", "s")


def test_file_overrides_shipped_and_explicit_overrides_both(tmp_path: Path) -> None:
    model_id = next(iter(SHIPPED))
    thresholds = Thresholds(MatchingSettings(thresholds_file=tmp_path / "t.json"))
    assert thresholds.threshold(model_id) == SHIPPED[model_id].threshold
    scores, same = _pairs()
    mine = calibrate(scores, same, 0.01, model_id, "my pairs")
    thresholds.save(mine)
    assert thresholds.get(model_id) == mine
    assert json.loads((tmp_path / "t.json").read_text())[model_id]["source"] == "my pairs"
    assert thresholds.threshold(model_id, 0.42) == 0.42
    with pytest.raises(InvalidInput, match=r"\[-1, 1\]"):
        thresholds.threshold(model_id, 3.0)


def test_unknown_model_needs_calibration(tmp_path: Path) -> None:
    thresholds = Thresholds(MatchingSettings(thresholds_file=tmp_path / "t.json"))
    with pytest.raises(FailedPrecondition, match="facegallery calibrate"):
        thresholds.get("custom-model-123")


def test_broken_thresholds_file_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text("{not json")
    with pytest.raises(FailedPrecondition, match="not valid JSON"):
        Thresholds(MatchingSettings(thresholds_file=path)).get("m")
    path.write_text(json.dumps({"m": {"threshold": "high"}}))
    with pytest.raises(FailedPrecondition, match="bad entry"):
        Thresholds(MatchingSettings(thresholds_file=path)).get("m")


def test_decide() -> None:
    candidates = [Candidate("ann", 0.5, "t1"), Candidate("bob", 0.3, "t2")]
    assert decide(candidates, 0.5, 0.4) == "ann"
    assert decide(candidates, 0.5, 0.5) == "ann"
    assert decide(candidates, 0.5, 0.6) == "unknown"
    assert decide(candidates, 0.2, 0.15) == "ann"  # a cohort gap, not the score, decides
    assert decide(candidates, 0.1, 0.15) == "unknown"
    assert decide(candidates, None, 0.0) == "unknown"
    assert decide([], None, 0.0) == "unknown"
