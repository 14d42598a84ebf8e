"""Open-set identification: the "unknown" threshold for a target FPIR at a gallery's real size.

A 1:1 threshold is chosen for a false accept rate (FAR): the chance that *one* comparison of
two different people reaches it. Identification compares a stranger with every enrolled
user, so the chance that *some* user reaches it, the false positive identification rate
(FPIR), grows with the gallery: about ``1 - (1 - FAR) ** N`` for N independent comparisons.
A threshold right for 100 users is wrong for 10,000. So the operator states a target FPIR
(per gallery, or per request) and the threshold is found for the gallery as it is now:

- **self_calibrated**: the gallery's own templates are non-mated searches for every *other*
  user. A seeded sample of templates is searched against the gallery, each leaving its own
  user out, and the threshold is the one that a fraction FPIR of those searches' decision
  values reach. The evidence (the highest values and the gallery's size) is stored beside the
  gallery and re-gathered when the number of users has changed by
  ``matching.recalibrate_growth`` since.
- **far_extended**: too few templates to measure the rate (fewer than
  ``min_false_positives / FPIR`` searches): the per-comparison impostor distribution of the
  stored pair calibration (a normal fit to its impostor scores) is extended to the gallery,
  solving ``1 - (1 - FAR(t)) ** n = FPIR`` for ``t``, where ``n`` counts the comparisons a
  stranger makes (``far_comparisons``: templates under ``max`` fusion, users under
  ``top2_mean``).
- **explicit**: a threshold in the request wins, as before.

What is compared with a self-calibrated threshold is ``matching.statistic``: by default
``cohort_gap``, the best user's score minus the mean score of the next users of the fused
shortlist (cohort normalisation): a face that resembles everybody, as a low-resolution face
among low-resolution faces does, needs a larger lead to be matched, and the cohort absorbs
most of the gallery's growth. ``score`` is the best user's score alone. The fallback and an
explicit threshold decide on the score, the quantity their thresholds are stated in.

Every answer says which method, statistic, threshold, target and gallery size it used.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

from facegallery.core import ids
from facegallery.core.config import MatchingSettings
from facegallery.core.errors import FailedPrecondition, InvalidInput
from facegallery.core.limits import MAX_FPIR
from facegallery.decisions.rates import threshold_at_rate
from facegallery.decisions.thresholds import PairCalibration, Thresholds
from facegallery.gallery import Candidate, Gallery, GalleryStats, ImpostorSample
from facegallery.gallery.fusion import MAX
from facegallery.wire.wording import SCORE, describe_operating_point

SELF_CALIBRATED = "self_calibrated"
FAR_EXTENDED = "far_extended"
EXPLICIT = "explicit"
COHORT_GAP = "cohort_gap"
SEARCH_BATCH = 512


@dataclass(frozen=True)
class OperatingPoint:
    """The threshold an identification used, and why: ``method`` is one of
    self_calibrated, far_extended, explicit; ``statistic`` what is compared with the
    threshold (score, cohort_gap); ``evidence`` counts the non-mated searches
    (self_calibrated) or impostor pairs (far_extended) behind it; ``calibrated_users`` is the
    gallery's size when the self-calibration ran (0 otherwise)."""

    method: str
    threshold: float
    target_fpir: float | None
    gallery_users: int
    gallery_templates: int
    evidence: int = 0
    calibrated_users: int = 0
    statistic: str = SCORE

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def describe(self) -> str:
        """The phrase for people (``wire.wording``, as every client prints it)."""
        return describe_operating_point(
            self.statistic, self.threshold, self.method, self.target_fpir, self.gallery_users
        )


def check_fpir(fpir: float) -> float:
    if not 0.0 < fpir <= MAX_FPIR:
        raise InvalidInput(f"target FPIR must be in (0, {MAX_FPIR}], got {fpir}")
    return fpir


def decision_value(candidates: list[Candidate], statistic: str, cohort: int) -> float | None:
    """What the threshold is compared with, from one probe's users ranked best first (at
    least ``cohort`` of them where the gallery holds that many): ``score``, the best user's
    score; ``cohort_gap``, that minus the mean score of the next ``cohort - 1`` users (0 for
    a gallery of one user: unrelated faces score about 0). None with no candidates."""
    if not candidates:
        return None
    best = candidates[0].score
    if statistic == SCORE:
        return best
    others = [c.score for c in candidates[1:cohort]]
    return best - (sum(others) / len(others) if others else 0.0)


def self_calibrated_threshold(
    sample: ImpostorSample, fpir: float, min_false_positives: int
) -> float | None:
    """The threshold a fraction ``fpir`` of the sample's decision values reach; None when
    the sample is too small to have ``min_false_positives`` above it."""
    if sample.searches * fpir < min_false_positives:
        return None
    # Scores below the stored tail are all lower than it: -inf stands in for them.
    padded = np.full(sample.searches, -np.inf)
    padded[: len(sample.tail)] = sample.tail
    return threshold_at_rate(padded, fpir)


def far_extended_threshold(calibration: PairCalibration, comparisons: int, fpir: float) -> float:
    """The threshold whose FPIR over ``comparisons`` independent impostor comparisons is
    ``fpir``, from the normal model of the pair calibration's impostor scores."""
    if calibration.impostor_mean is None or calibration.impostor_std is None:
        raise FailedPrecondition(
            f"the calibration of {calibration.model_id} has no impostor statistics, which "
            "open-set identification needs for small galleries: re-run `facegallery calibrate`"
        )
    far = -math.expm1(math.log1p(-fpir) / max(1, comparisons))
    return calibration.impostor_mean - calibration.impostor_std * NormalDist().inv_cdf(far)


def far_comparisons(stats: GalleryStats, fusion: str) -> int:
    """How many independent pair comparisons a stranger's search is worth under ``fusion``.
    ``max``: every template (a user's best of k templates is k chances). ``top2_mean``: every
    user, since the mean of a user's two best is about one comparison with that person. At
    150-2,535 users, counting templates put the top2_mean threshold 0.014-0.028 above the
    one measured on strangers, counting users within 0.011 (benchmarks/bench_openset.py)."""
    return stats.templates if fusion == MAX else stats.users


def tail_length(searches: int) -> int:
    """How many of the highest scores to keep so any target up to MAX_FPIR is answerable."""
    return min(searches, math.floor(MAX_FPIR * searches) + 1)


@dataclass
class _State:
    """What one process knows of a gallery: its size and stored sample, and when it read them."""

    stats: GalleryStats
    sample: ImpostorSample | None
    read_at: float


class OpenSetCalibrator:
    """Operating points for the galleries of one embedding model (one per process)."""

    def __init__(
        self,
        gallery: Gallery,
        thresholds: Thresholds,
        settings: MatchingSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gallery = gallery
        self.thresholds = thresholds
        self.settings = settings
        self.clock = clock
        self._states: dict[str, _State] = {}
        self._lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="calibrate")
        self._pending: dict[str, Future[_State]] = {}

    @property
    def cohort(self) -> int:
        """How many ranked users a decision needs: the fused shortlist, whose users after the
        best are the cohort (identify searches at least this many)."""
        return self.gallery.settings.cohort_size

    def search(
        self, gallery: str, probes: np.ndarray, point: OperatingPoint, top_k: int
    ) -> list[tuple[list[Candidate], float | None]]:
        """Each probe's ``top_k`` best users and the value ``point``'s threshold is compared
        with, decided on the same search whatever ``top_k`` is: the whole cohort, and under
        fusion exactly the fused shortlist that the calibration measured, so ``top_k`` only
        cuts the answer (to at most ``cohort_size`` users)."""
        width = self.cohort if self.gallery.fuses else max(top_k, self.cohort)
        hits = self.gallery.search(gallery, probes, width)
        return [(c[:top_k], decision_value(c, point.statistic, self.cohort)) for c in hits]

    def target(self, gallery: str, fpir: float | None = None) -> float:
        """The request's target, else the gallery's own, else the default."""
        if fpir is None:
            fpir = self.settings.gallery_fpir.get(gallery, self.settings.target_fpir)
        return check_fpir(fpir)

    def operating_point(
        self, gallery: str, fpir: float | None = None, threshold: float | None = None
    ) -> OperatingPoint:
        """The threshold identify uses on ``gallery`` now (an explicit one wins)."""
        gallery = ids.gallery_id(gallery)
        if threshold is not None:
            stats = self._state(gallery).stats
            limit = self.thresholds.threshold(self.gallery.model_id, threshold)
            return OperatingPoint(EXPLICIT, limit, None, stats.users, stats.templates)
        target = self.target(gallery, fpir)
        state = self._state(gallery)
        if self._wants_calibration(state, target):
            if state.sample is None:
                state = self._calibration(gallery).result()  # nothing to serve meanwhile
            else:
                self._calibration(gallery)  # the stored sample serves until it is replaced
        stats, sample = state.stats, state.sample
        if sample is not None:
            measured = self_calibrated_threshold(sample, target, self.settings.min_false_positives)
            if measured is not None:
                return OperatingPoint(
                    SELF_CALIBRATED,
                    measured,
                    target,
                    stats.users,
                    stats.templates,
                    sample.searches,
                    sample.users,
                    sample.statistic,
                )
        pairs = self.thresholds.get(self.gallery.model_id)
        comparisons = far_comparisons(stats, self.gallery.settings.fusion)
        extended = far_extended_threshold(pairs, comparisons, target)
        return OperatingPoint(
            FAR_EXTENDED, extended, target, stats.users, stats.templates, pairs.impostor_pairs
        )

    def calibrate(self, gallery: str) -> ImpostorSample | None:
        """Gather the gallery's evidence now and store it (`facegallery calibrate-gallery`);
        None for an empty gallery."""
        return self._calibration(ids.gallery_id(gallery)).result().sample

    def settle(self) -> None:
        """Wait for a recalibration running in the background (tests, shutdown)."""
        for future in list(self._pending.values()):
            future.result()

    def _state(self, gallery: str) -> _State:
        state = self._states.get(gallery)
        if state is None or self.clock() - state.read_at >= self.settings.calibration_check_s:
            sample = self.gallery.impostor_samples.get(gallery)
            if sample is not None and sample.statistic != self.settings.statistic:
                sample = None  # measured on another statistic: no evidence for this one
            state = _State(self.gallery.stats(gallery), sample, self.clock())
            self._states[gallery] = state
        return state

    def _wants_calibration(self, state: _State, target: float) -> bool:
        """Worth searching: enough templates to measure the target, and no stored sample or
        one taken when the gallery was a different size by more than the allowed growth."""
        searches = min(state.stats.templates, self.settings.calibration_sample)
        if searches * target < self.settings.min_false_positives:
            return False
        if state.sample is None:
            return True
        changed = abs(state.stats.users - state.sample.users)
        return changed > self.settings.recalibrate_growth * max(1, state.sample.users)

    def _calibration(self, gallery: str) -> Future[_State]:
        """One calibration per gallery at a time, in the background thread."""
        with self._lock:
            pending = self._pending.get(gallery)
            if pending is None or pending.done():
                pending = self._worker.submit(self._gather, gallery)
                self._pending[gallery] = pending
            return pending

    def _gather(self, gallery: str) -> _State:
        """Leave-one-user-out searches of a seeded sample of templates; store the result."""
        stats = self.gallery.stats(gallery)
        users, vectors = self.gallery.sample_templates(
            gallery, self.settings.calibration_sample, self.settings.calibration_seed
        )
        sample = None
        if len(users):
            statistic = self.settings.statistic
            values = np.array([v for _, v in self.impostor_decisions(gallery, users, vectors)])
            tail = np.sort(values)[::-1][: tail_length(len(values))]
            sample = ImpostorSample(
                gallery,
                stats.users,
                stats.templates,
                len(values),
                tuple(round(float(s), 7) for s in tail),  # as stored, so all processes agree
                int(time.time() * 1000),
                statistic,
            )
            self.gallery.impostor_samples.put(sample)
        state = _State(stats, sample, self.clock())
        self._states[gallery] = state
        return state

    def impostor_decisions(
        self, gallery: str, users: list[str], vectors: np.ndarray, statistic: str | None = None
    ) -> list[tuple[Candidate | None, float]]:
        """For each template, searched with its own user (``users[i]``) left out: the best
        other user and the decision value under ``statistic`` (default
        ``matching.statistic``), what a stranger with that face would get (None and -1 when
        the gallery holds nobody else). One more user than the cohort is searched, so the
        cohort stays whole when the template's own user is among them."""
        statistic = self.settings.statistic if statistic is None else statistic
        found: list[tuple[Candidate | None, float]] = []
        for start in range(0, len(users), SEARCH_BATCH):
            batch = vectors[start : start + SEARCH_BATCH]
            for i, candidates in enumerate(self.gallery.search(gallery, batch, self.cohort + 1)):
                others = [c for c in candidates if c.user_id != users[start + i]]
                value = decision_value(others, statistic, self.cohort)
                found.append((others[0], value) if value is not None else (None, -1.0))
        return found
