"""Decisions: thresholds per embedding model id, calibration, verify and identify answers.

A threshold belongs to the embedding space it was measured in, so it is keyed by the model id
(flip averaging included). One chosen for a target false accept rate (FAR) on impostor pairs
is the operator's lever: a lower FAR means fewer wrong matches and more missed ones. An
explicit threshold in a request overrides the stored one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np
from pydantic import TypeAdapter, ValidationError

from facegallery.core.config import MatchingSettings
from facegallery.core.errors import FailedPrecondition, InvalidInput
from facegallery.decisions.rates import tar_at_far
from facegallery.gallery import Candidate
from facegallery.vision.detect import Detection
from facegallery.vision.quality import Quality
from facegallery.wire.wording import UNKNOWN, describe_decision


@dataclass(frozen=True)
class PairCalibration:
    """A 1:1 threshold fitted on labelled pairs for a target FAR, and the evidence for it
    (not the open set's self-calibration: ``decisions.openset``)."""

    model_id: str
    threshold: float
    far_target: float
    far: float
    tar: float
    genuine_pairs: int
    impostor_pairs: int
    source: str
    # A normal fit to the impostor scores: the per-comparison false accept rate at any
    # threshold, which open-set identification extends to a small gallery's size.
    impostor_mean: float | None = None
    impostor_std: float | None = None


def _celeba_150(
    model_id: str, threshold: float, tar: float, impostors: tuple[float, float]
) -> PairCalibration:
    return PairCalibration(
        model_id, threshold, 0.001, 0.001, tar, 3000, 3000, "celeba_150/pairs.csv", *impostors
    )


# Shipped defaults: `facegallery calibrate --far 0.001` on the development set celeba_150
# (3,000 genuine and 3,000 impostor pairs), see docs/concepts.md "Decisions and thresholds",
# with the mean and standard deviation of the impostor scores. Galleries of other people
# and cameras should calibrate on pairs of their own.
SHIPPED: dict[str, PairCalibration] = {
    c.model_id: c
    for c in (
        _celeba_150(
            "sface-2021dec-728d3b367af3+flip", 0.34931904077529913, 0.895333, (0.087891, 0.089295)
        ),
        _celeba_150(
            "arcface-w600k-mbf-35b35e093ed0+flip",
            0.25579136610031133,
            0.938,
            (0.00355, 0.070104),
        ),
        _celeba_150(
            "sface-2021dec-728d3b367af3", 0.356260359287262, 0.880667, (0.085983, 0.089206)
        ),
        _celeba_150(
            "arcface-w600k-mbf-35b35e093ed0", 0.25031709671020513, 0.938, (0.003304, 0.070133)
        ),
        _celeba_150(
            "fused-sface-dlib-847b48dfdc5c+flip",
            0.6256059408187867,
            0.909,
            (0.460777, 0.054218),
        ),
        _celeba_150(
            "fused-sface-dlib-847b48dfdc5c", 0.6256601810455323, 0.898667, (0.457734, 0.054097)
        ),
    )
}


def calibrate(
    scores: np.ndarray, same: np.ndarray, far_target: float, model_id: str, source: str
) -> PairCalibration:
    """The lowest threshold whose FAR on these pairs is at most ``far_target``."""
    if not 0.0 < far_target < 1.0:
        raise InvalidInput(f"--far must be between 0 and 1, got {far_target}")
    measured = tar_at_far(scores, same, far_target)
    impostors = int((~same.astype(bool)).sum())
    if measured is None:
        raise InvalidInput(
            f"{impostors} impostor pairs cannot measure a FAR of {far_target}: "
            f"at least {int(np.ceil(1 / far_target))} are needed"
        )
    tar, threshold = measured
    filled = np.where(np.isnan(scores), -np.inf, scores)
    far = float((filled[~same.astype(bool)] >= threshold).mean())
    scored = scores[~same.astype(bool) & ~np.isnan(scores)]
    return PairCalibration(
        model_id=model_id,
        threshold=threshold,  # exact: rounding down could admit one more impostor
        far_target=far_target,
        far=far,
        tar=round(tar, 6),
        genuine_pairs=int(same.astype(bool).sum()),
        impostor_pairs=impostors,
        source=source,
        impostor_mean=round(float(scored.mean()), 6),
        impostor_std=round(float(scored.std()), 6),
    )


class Thresholds:
    """Calibrated thresholds: the operator's file first, then the shipped defaults."""

    def __init__(self, settings: MatchingSettings) -> None:
        self.path = settings.thresholds_file.expanduser()

    def get(self, model_id: str) -> PairCalibration:
        stored = self._read().get(model_id)
        if stored is not None:
            try:
                return TypeAdapter(PairCalibration).validate_python(stored)
            except ValidationError as exc:
                raise FailedPrecondition(
                    f"thresholds file {self.path} has a bad entry for {model_id}: {exc}"
                ) from exc
        if model_id in SHIPPED:
            return SHIPPED[model_id]
        raise FailedPrecondition(
            f"no threshold for model {model_id}: run `facegallery calibrate --root DIR "
            "--pairs FILE --far 0.001` on pairs of your own, or pass a threshold explicitly"
        )

    def threshold(self, model_id: str, override: float | None = None) -> float:
        if override is not None:
            if not -1.0 <= override <= 1.0:
                raise InvalidInput(
                    f"threshold must be a cosine similarity in [-1, 1], got {override}"
                )
            return override
        return self.get(model_id).threshold

    def save(self, calibration: PairCalibration) -> None:
        entries = self._read()
        entries[calibration.model_id] = asdict(calibration)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".part")
        tmp.write_text(json.dumps(entries, indent=2) + "\n")
        tmp.replace(self.path)

    def _read(self) -> dict[str, dict[str, object]]:
        if not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text())
        except json.JSONDecodeError as exc:
            raise FailedPrecondition(
                f"thresholds file {self.path} is not valid JSON: {exc}"
            ) from exc
        if not isinstance(data, dict):
            raise FailedPrecondition(f"thresholds file {self.path} must hold an object")
        return data


@dataclass(frozen=True)
class Verification:
    """1:1 answer: is the probe's face the claimed user?"""

    gallery: str
    user_id: str
    score: float
    threshold: float
    match: bool
    detection: Detection
    quality: Quality
    fusion: str  # how ``score`` fuses the user's templates (gallery.fusion), as identify does


@dataclass(frozen=True)
class Identification:
    """1:N answer for one face: candidates and the decision (a user id or ``unknown``), and
    ``decision_score``, the value compared with the operating point's threshold (the best
    score, or the cohort gap: ``facegallery.decisions.openset``).

    A face that failed the quality gate is not searched: no candidates, decision ``unknown``,
    and ``quality.reasons`` says why."""

    detection: Detection
    quality: Quality
    candidates: list[Candidate] = field(default_factory=list)
    decision: str = UNKNOWN
    searched: bool = False
    decision_score: float | None = None

    def describe(self) -> str:
        """One phrase for people: the decision and the score behind it."""
        best = (self.candidates[0].user_id, self.candidates[0].score) if self.candidates else None
        return describe_decision(
            self.searched, self.quality.reasons, best, self.decision, self.decision_score
        )


def decide(candidates: list[Candidate], value: float | None, threshold: float) -> str:
    """The best candidate's user id when the decision value (``facegallery.decisions.openset``)
    reaches the threshold, else unknown."""
    if candidates and value is not None and value >= threshold:
        return candidates[0].user_id
    return UNKNOWN
