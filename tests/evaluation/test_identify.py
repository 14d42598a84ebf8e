"""1:N evaluation on a folder-per-identity set the test builds from ORL faces."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from facegallery.assets.samples import Samples
from facegallery.core.config import MatchingSettings
from facegallery.core.errors import InvalidInput
from facegallery.decisions.openset import far_extended_threshold
from facegallery.decisions.thresholds import SHIPPED
from facegallery.evaluation.identify import evaluate_identification, split_identities
from facegallery.evaluation.metrics import fnir_at_fpir, open_set_rates
from facegallery.vision.pipeline import FacePipeline
from tests.helpers import read_bgr


def _orl_set(samples: Samples, root: Path, enrolled: int, strangers: int) -> Path:
    """``enrolled`` people with 4 photos each, ``strangers`` people with 1 photo each."""
    for p in range(1, enrolled + strangers + 1):
        folder = root / f"s{p}"
        folder.mkdir(parents=True)
        for k in range(1, 5 if p <= enrolled else 2):
            cv2.imwrite(str(folder / f"{k:02d}.png"), read_bgr(samples.orl / f"s{p}" / f"{k}.pgm"))
    return root


def test_split(tmp_path: Path, samples: Samples) -> None:
    root = _orl_set(samples, tmp_path / "set", enrolled=3, strangers=2)
    split = split_identities(root, k=1, min_images=2)
    assert sorted(split.enroll) == ["s1", "s2", "s3"]
    assert [p.name for p in split.enroll["s1"]] == ["01.png"]  # the first K by name
    assert len(split.mated) == 9 and len(split.nonmated) == 2
    with pytest.raises(InvalidInput, match="min-images"):
        split_identities(root, k=2, min_images=2)
    with pytest.raises(InvalidInput, match="no identity"):
        split_identities(root, k=1, min_images=50)


@pytest.mark.slow
def test_evaluate_identification(tmp_path: Path, samples: Samples, pipeline: FacePipeline) -> None:
    root = _orl_set(samples, tmp_path / "set", enrolled=10, strangers=10)
    cv2.imwrite(str(root / "s1" / "05.png"), np.full((112, 92, 3), 128, np.uint8))  # no face
    distractors = tmp_path / "distractors"
    for p in range(21, 41):  # other people: enrolled (their first photo), never searched
        (distractors / f"d{p}").mkdir(parents=True)
        for k in (1, 2):
            image = read_bgr(samples.orl / f"s{p}" / f"{k}.pgm")
            cv2.imwrite(str(distractors / f"d{p}" / f"{k}.png"), image)
    matching = MatchingSettings(thresholds_file=tmp_path / "none.json")
    report = evaluate_identification(
        pipeline, root, 1, 2, matching, "top2_mean", distractors, fpir=0.05, progress=False
    )
    assert report["gallery_users"] == 30 and report["distractor_users"] == 20
    assert report["fusion"] == "top2_mean"
    assert report["failed_to_enroll"] == 0
    # 30 templates cannot measure an FPIR of 0.05: the pair calibration extended to the 30
    # users (one comparison each under top2_mean).
    point = report["operating_point"]
    assert point["method"] == "far_extended" and point["target_fpir"] == 0.05
    expected = far_extended_threshold(SHIPPED[pipeline.model_id], 30, 0.05)
    assert point["threshold"] == pytest.approx(expected, abs=1e-6)
    assert point["gallery_users"] == 30
    assert 0.0 <= point["measured_fpir"] <= 1.0 and 0.0 < point["measured_fnir"] < 0.5
    assert report["mated_probes"] == 31 and report["nonmated_probes"] == 10
    assert report["failed_probes"] == 1
    assert 0.9 <= report["rank1"] < 1.0  # the faceless probe is a miss
    assert report["rank5"] >= report["rank1"]
    assert set(report["fnir_at_fpir"]) == {"0.1"}
    assert report["model_id"] == pipeline.model_id


def test_fnir_at_fpir() -> None:
    nonmated = np.linspace(0.0, 0.5, 100)  # the 10 highest are >= 0.4545...
    mated_ok = np.array([True, True, True, False])
    mated_score = np.array([0.9, 0.47, np.nan, 0.95])
    fnir = fnir_at_fpir(mated_ok, mated_score, nonmated, 0.1)
    # threshold just above the 11th highest non-mated score: 0.9 and 0.47 pass, NaN and the
    # wrong-user top hit do not
    assert fnir == pytest.approx(0.5)
    assert fnir_at_fpir(mated_ok, mated_score, nonmated, 0.001) is None


def test_open_set_rates() -> None:
    mated_ok = np.array([True, True, False, True])
    mated_score = np.array([0.8, 0.3, 0.9, np.nan])
    nonmated = np.array([0.1, 0.6, np.nan, 0.2, 0.5])
    # At 0.5: non-mated 0.6 and 0.5 reach it (2 of 5); only the first mated search is a hit.
    assert open_set_rates(0.5, mated_ok, mated_score, nonmated) == (0.4, 0.75)
    assert open_set_rates(0.95, mated_ok, mated_score, nonmated) == (0.0, 1.0)
