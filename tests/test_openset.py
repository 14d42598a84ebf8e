"""Open-set operating points on real Milvus Lite galleries of synthetic templates whose score
distribution is known: random unit vectors in D dimensions, whose cosine with any other has
the density (1 - t^2)^((D - 3) / 2). For independent templates the FPIR at threshold t over
``c`` comparisons is 1 - (1 - P(cos >= t))^c, so the right threshold for a gallery's size is
known exactly and the self-calibration can be checked against it. That is the law of a
user's best template, so these galleries score users by ``max`` and decide on the score
(``matching.statistic: score``); the top2_mean fusion's fallback and the cohort gap, the
default statistic, are checked on their own."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest

from facegallery.core.config import GallerySettings, MatchingSettings
from facegallery.core.errors import InvalidInput
from facegallery.decisions.openset import (
    COHORT_GAP,
    EXPLICIT,
    FAR_EXTENDED,
    SELF_CALIBRATED,
    OpenSetCalibrator,
    OperatingPoint,
    decision_value,
    far_extended_threshold,
    self_calibrated_threshold,
)
from facegallery.decisions.rates import threshold_at_rate
from facegallery.decisions.thresholds import SHIPPED, Thresholds
from facegallery.gallery import Candidate, Gallery, ImpostorSample, NewTemplate
from facegallery.wire.wording import SCORE

DIM = 64
MODEL = "sface-2021dec-728d3b367af3+flip"  # shipped pair calibration: the fallback's model
PER_USER = 4


class Clock:
    """A clock the test moves by hand (the calibrator re-reads a gallery's size only every
    ``calibration_check_s``)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def exact_threshold(comparisons: int, fpir: float) -> float:
    """The t with 1 - (1 - P(cos >= t))^comparisons = fpir for random unit vectors."""
    t = np.linspace(0.0, 1.0, 400_001)
    density = (1.0 - t**2) ** ((DIM - 3) / 2)
    tail = np.cumsum(density[::-1])[::-1] * (t[1] - t[0]) / (2 * np.trapezoid(density, t))
    per_comparison = -math.expm1(math.log1p(-fpir) / comparisons)
    return float(t[np.searchsorted(-tail, -per_comparison)])


def add_users(gallery: Gallery, name: str, first: int, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    batch = {}
    for u in range(first, first + count):
        vectors = rng.normal(size=(PER_USER, DIM))
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        batch[f"user{u}"] = [
            NewTemplate(_tid(name, u, i), v.astype(np.float32), 1.0, f"{u}-{i}.jpg")
            for i, v in enumerate(vectors)
        ]
    gallery.add_many(name, batch)


def _tid(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> Gallery:
    path = tmp_path_factory.mktemp("openset") / "g.db"
    return Gallery(GallerySettings(uri=str(path), index_type="FLAT", fusion="max"), MODEL, DIM)


def calibrator(
    gallery: Gallery, tmp_path: Path, clock: Clock | None = None, **changes: object
) -> OpenSetCalibrator:
    changes = {"statistic": SCORE, **changes}
    settings = MatchingSettings.model_validate(
        {"thresholds_file": tmp_path / "thresholds.json", **changes}
    )
    return OpenSetCalibrator(gallery, Thresholds(settings), settings, clock or Clock())


def loo_per_user(vectors: np.ndarray, users: list[str]) -> np.ndarray:
    """For a sample holding every template of its gallery: each template's best-template
    score against every user but its own, in numpy, (templates, users), descending, its own
    user's slot last at -inf."""
    owner = np.array(users)
    everyone = np.array(sorted(set(users)))
    scores = vectors @ vectors.T
    per_user = np.stack([scores[:, owner == u].max(axis=1) for u in everyone], axis=1)
    per_user[owner[:, None] == everyone[None, :]] = -np.inf
    return -np.sort(-per_user, axis=1)


def test_threshold_rises_with_gallery_size_as_the_known_distribution_says(
    gallery: Gallery, tmp_path: Path
) -> None:
    fpir = 0.05
    chosen = []
    for total in (100, 400, 1600):
        before = gallery.stats("grows").users
        add_users(gallery, "grows", before, total - before, seed=total)
        calibrated = calibrator(gallery, tmp_path)
        calibrated.operating_point("grows", fpir)  # the last size's sample serves meanwhile
        calibrated.settle()
        point = calibrated.operating_point("grows", fpir)
        assert point.method == SELF_CALIBRATED
        assert point.gallery_users == total
        # Each search leaves its own user out: (N - 1) x K independent comparisons.
        expected = exact_threshold((total - 1) * PER_USER, fpir)
        assert point.threshold == pytest.approx(expected, abs=0.02)
        chosen.append(point.threshold)
    assert chosen[0] < chosen[1] < chosen[2]
    assert chosen[2] - chosen[0] > 0.05


def test_self_calibration_leaves_each_users_own_templates_out(
    gallery: Gallery, tmp_path: Path
) -> None:
    """Each user's templates are near copies of one another: a search that did not leave its
    own user out would score about 1.0."""
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(40, DIM))
    batch = {}
    for u, centre in enumerate(centres):
        vectors = centre + 0.01 * rng.normal(size=(3, DIM))
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        batch[f"twin{u}"] = [
            NewTemplate(_tid("twins", u, i), v.astype(np.float32), 1.0, "x.jpg")
            for i, v in enumerate(vectors)
        ]
    gallery.add_many("twins", batch)
    users, vectors = gallery.sample_templates("twins", 1000, seed=0)
    assert len(users) == 120
    found = calibrator(gallery, tmp_path).impostor_decisions("twins", users, vectors)
    best = np.array([value for _, value in found])
    owner = np.array(users)
    scores = vectors @ vectors.T
    exact = [scores[i][owner != owner[i]].max() for i in range(len(users))]
    np.testing.assert_allclose(best, exact, atol=1e-5)
    assert best.max() < 0.9
    others = [other.user_id if other is not None else None for other, _ in found]
    assert all(o is not None and o != u for o, u in zip(others, users, strict=True))
    # The cohort gap leaves the template's own user out of best and cohort alike: with it
    # in, the best would be that user at about 1.0, a lead of about 0.9 over the cohort.
    gaps = calibrator(gallery, tmp_path).impostor_decisions("twins", users, vectors, COHORT_GAP)
    ranked = loo_per_user(vectors, users)
    cohort = gallery.settings.cohort_size
    expected = ranked[:, 0] - ranked[:, 1:cohort].mean(axis=1)
    np.testing.assert_allclose([v for _, v in gaps], expected, atol=1e-5)
    assert max(v for _, v in gaps) < 0.5


def test_small_gallery_uses_and_reports_the_far_extended_fallback(
    gallery: Gallery, tmp_path: Path
) -> None:
    add_users(gallery, "small", 0, 20, seed=1)  # 80 templates: 0.8 false positives at 0.01
    point = calibrator(gallery, tmp_path).operating_point("small")
    assert point.method == FAR_EXTENDED
    assert point.target_fpir == 0.01
    assert (point.gallery_users, point.gallery_templates) == (20, 80)
    assert point.evidence == SHIPPED[MODEL].impostor_pairs
    assert point.threshold == far_extended_threshold(SHIPPED[MODEL], 80, 0.01)
    assert gallery.impostor_samples.get("small") is None  # nothing searched, nothing stored


def test_under_top2_mean_the_fallback_counts_users(gallery: Gallery, tmp_path: Path) -> None:
    """The mean of a user's two best templates is about one comparison with that person."""
    add_users(gallery, "small-fused", 0, 20, seed=4)
    fused = Gallery(gallery.settings.model_copy(update={"fusion": "top2_mean"}), MODEL, DIM)
    point = calibrator(fused, tmp_path).operating_point("small-fused")
    assert point.method == FAR_EXTENDED
    assert (point.gallery_users, point.gallery_templates) == (20, 80)
    assert point.threshold == far_extended_threshold(SHIPPED[MODEL], 20, 0.01)
    assert point.threshold < calibrator(gallery, tmp_path).operating_point("small-fused").threshold


def test_far_extended_model_follows_the_union_bound() -> None:
    pairs = SHIPPED[MODEL]
    assert pairs.impostor_mean is not None and pairs.impostor_std is not None
    one = far_extended_threshold(pairs, 1, 0.01)
    assert one == pytest.approx(pairs.impostor_mean + 2.3263 * pairs.impostor_std, abs=1e-4)
    sizes = [far_extended_threshold(pairs, n, 0.01) for n in (1, 10, 1000, 100_000)]
    assert sizes == sorted(sizes) and sizes[-1] - sizes[0] > 0.2
    assert far_extended_threshold(pairs, 1000, 0.001) > far_extended_threshold(pairs, 1000, 0.01)


def test_the_stored_tail_gives_the_same_threshold_as_every_score() -> None:
    scores = np.random.default_rng(0).normal(size=5000)
    ranked = tuple(float(s) for s in np.sort(scores)[::-1][:501])
    sample = ImpostorSample("g", 100, 5000, 5000, ranked, 0, SCORE)
    for fpir in (0.002, 0.01, 0.05, 0.1):
        assert self_calibrated_threshold(sample, fpir, 10) == threshold_at_rate(scores, fpir)
    assert self_calibrated_threshold(sample, 0.001, 10) is None  # 5 false positives: too few


def test_an_explicit_threshold_overrides_and_targets_are_checked(
    gallery: Gallery, tmp_path: Path
) -> None:
    add_users(gallery, "explicit", 0, 5, seed=2)
    calibrated = calibrator(gallery, tmp_path, gallery_fpir={"explicit": 0.001})
    point = calibrated.operating_point("explicit", threshold=0.9)
    assert (point.method, point.threshold, point.target_fpir) == (EXPLICIT, 0.9, None)
    assert calibrated.operating_point("explicit").target_fpir == 0.001  # the gallery's own
    assert calibrated.operating_point("explicit", fpir=0.05).target_fpir == 0.05  # the call's
    for bad in (0.0, 0.5, -1.0):
        with pytest.raises(InvalidInput, match="FPIR"):
            calibrated.operating_point("explicit", fpir=bad)
    with pytest.raises(InvalidInput, match="threshold"):
        calibrated.operating_point("explicit", threshold=2.0)


def test_recalibrates_once_the_gallery_has_grown_by_the_configured_fraction(
    gallery: Gallery, tmp_path: Path
) -> None:
    clock = Clock()
    add_users(gallery, "recal", 0, 300, seed=4)  # 1,200 templates: self-calibrated at 0.01
    first = calibrator(gallery, tmp_path, clock, recalibrate_growth=0.2, calibration_check_s=60)
    point = first.operating_point("recal")
    assert (point.method, point.calibrated_users) == (SELF_CALIBRATED, 300)
    stored = gallery.impostor_samples.get("recal")
    assert stored is not None and stored.users == 300

    add_users(gallery, "recal", 300, 50, seed=5)  # +17%: within the allowed growth
    clock.now += 61
    assert first.operating_point("recal").calibrated_users == 300
    first.settle()
    assert gallery.impostor_samples.get("recal") == stored

    add_users(gallery, "recal", 350, 20, seed=6)  # +23% since the calibration
    assert first.operating_point("recal").calibrated_users == 300  # cached for 60 s
    clock.now += 61
    served = first.operating_point("recal")  # the old sample serves while the new one runs
    assert served.calibrated_users == 300 and served.gallery_users == 370
    first.settle()
    renewed = gallery.impostor_samples.get("recal")
    assert renewed is not None and renewed.users == 370 and renewed.searches == 370 * PER_USER
    assert first.operating_point("recal").calibrated_users == 370

    # Stored beside the gallery: another process reads it instead of searching again.
    other = calibrator(gallery, tmp_path)
    assert other.operating_point("recal") == first.operating_point("recal")


def test_decision_value_is_the_score_or_the_lead_over_the_cohort() -> None:
    ranked = [Candidate(f"u{i}", s, f"t{i}") for i, s in enumerate((0.6, 0.3, 0.2, 0.1))]
    assert decision_value(ranked, SCORE, 10) == 0.6
    assert decision_value(ranked, COHORT_GAP, 10) == pytest.approx(0.6 - 0.2)
    assert decision_value(ranked, COHORT_GAP, 3) == pytest.approx(0.6 - 0.25)  # next 2 only
    assert decision_value(ranked[:1], COHORT_GAP, 10) == 0.6  # nobody else: a cohort of 0
    assert decision_value([], COHORT_GAP, 10) is None


def test_the_cohort_gap_is_self_calibrated_on_its_own_values_and_reported(
    gallery: Gallery, tmp_path: Path
) -> None:
    """The default statistic: the threshold is the FPIR quantile of the leave-one-out cohort
    gaps (computed here in numpy from every user's templates), the answer says so, and a
    stored calibration of the plain score is not used for it (it is gathered again)."""
    add_users(gallery, "cohort", 0, 300, seed=8)  # 1,200 templates: self-calibrated at 0.01
    by_score = calibrator(gallery, tmp_path)
    assert by_score.operating_point("cohort").statistic == SCORE
    scored = gallery.impostor_samples.get("cohort")
    assert scored is not None and scored.statistic == SCORE

    by_gap = calibrator(gallery, tmp_path, statistic=COHORT_GAP)
    point = by_gap.operating_point("cohort")
    assert (point.method, point.statistic) == (SELF_CALIBRATED, COHORT_GAP)
    assert point.describe().startswith("cohort_gap threshold ")
    stored = gallery.impostor_samples.get("cohort")
    assert stored is not None and stored.statistic == COHORT_GAP and stored != scored
    users, vectors = gallery.sample_templates("cohort", 4000, seed=0)
    assert stored.searches == len(users) == 1200
    ranked = loo_per_user(vectors, users)
    gaps = ranked[:, 0] - ranked[:, 1 : gallery.settings.cohort_size].mean(axis=1)
    assert point.threshold == pytest.approx(threshold_at_rate(gaps, 0.01), abs=1e-5)
    # The gap is far below the score's threshold: it is a lead, not a cosine.
    assert point.threshold < by_score.operating_point("cohort").threshold - 0.1
    # Below min_false_positives the fallback decides, on the score.
    small = by_gap.operating_point("cohort", fpir=0.005)
    assert (small.method, small.statistic) == (FAR_EXTENDED, SCORE)


def test_the_decision_is_the_same_whatever_top_k(tmp_path: Path) -> None:
    """A toy top2_mean gallery (shortlist 2) where fusing a third user would change the
    cohort: a asks for 1, 2, 3 or 10 candidates, the best user and the decision value stay
    those of the fused shortlist that the calibration measures."""
    axes = np.eye(DIM, dtype=np.float32)

    def at(cosine: float, axis: int) -> np.ndarray:
        return np.asarray(cosine * axes[0] + math.sqrt(1 - cosine**2) * axes[axis], np.float32)

    settings = GallerySettings(uri=str(tmp_path / "k.db"), cohort_size=2)
    gallery = Gallery(settings, "toy-model", DIM)
    users = {"a": [0.9, 0.5], "c": [0.85], "b": [0.84, 0.84]}  # best templates: a, c, b
    axis = iter(range(1, DIM))
    gallery.add_many(
        "toy",
        {
            user: [
                NewTemplate(_tid(user, i), at(c, next(axis)), 1.0, "x") for i, c in enumerate(cs)
            ]
            for user, cs in users.items()
        },
    )
    calibrator = OpenSetCalibrator(gallery, Thresholds(MatchingSettings()), MatchingSettings())
    point = OperatingPoint(SELF_CALIBRATED, 0.1, 0.01, 3, 5, 0, 3, COHORT_GAP)
    answers = {k: calibrator.search("toy", axes[0][None], point, k)[0] for k in (1, 2, 3, 10)}
    for top_k, (candidates, value) in answers.items():
        assert [c.user_id for c in candidates] == ["c", "a"][
            :top_k
        ]  # b: third by best template, off the shortlist
        assert value == pytest.approx(0.85 - 0.7, abs=1e-4)  # c minus a's fused 0.7
