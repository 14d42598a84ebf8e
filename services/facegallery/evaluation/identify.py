"""1:N evaluation on a folder-per-identity set, through the real gallery.

People with at least ``min_images`` photos get their first ``k`` (sorted by name) enrolled;
their other photos are mated searches. People with fewer photos are not enrolled: their
photos are non-mated searches, which measure false positive identification. Distractors
(another folder-per-identity set) grow the gallery: enrolled, never searched. Rank-1 / rank-5
count a mated search as a hit when the mate is among the first 1 / 5 users returned;
FNIR@FPIR follows NIST FRVT (rank 1, threshold set on the non-mated searches). Each image
contributes its largest face, without the quality gate: this measures recognition, and a
photo without a face is a failure to enroll or a failed search, never skipped.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facegallery.core.config import GallerySettings, MatchingSettings
from facegallery.core.errors import InvalidInput
from facegallery.core.limits import IMAGE_SUFFIXES
from facegallery.decisions.openset import OpenSetCalibrator, OperatingPoint
from facegallery.decisions.thresholds import Thresholds
from facegallery.evaluation.metrics import FPIR_TARGETS, fnir_at_fpir, open_set_rates
from facegallery.evaluation.runner import embed_images, largest_face_embedder
from facegallery.gallery import Candidate, Gallery, NewTemplate
from facegallery.vision.pipeline import FacePipeline

EVAL_GALLERY = "eval"
DISTRACTOR = "distractor-"
RANKS = 5


@dataclass(frozen=True)
class Split:
    """Which images enroll whom, and which are mated / non-mated searches."""

    enroll: dict[str, list[Path]]
    mated: list[tuple[Path, str]]
    nonmated: list[Path]


def split_identities(root: Path, k: int, min_images: int) -> Split:
    """The enrollment / search split of a folder-per-identity set."""
    if k < 1 or min_images < k + 1:
        raise InvalidInput("need --enroll-per-identity >= 1 and --min-images >= K + 1")
    folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not folders:
        raise InvalidInput(f"{root} has no identity folders")
    enroll: dict[str, list[Path]] = {}
    mated: list[tuple[Path, str]] = []
    nonmated: list[Path] = []
    for folder in folders:
        images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(images) >= min_images:
            enroll[folder.name] = images[:k]
            mated += [(p, folder.name) for p in images[k:]]
        else:
            nonmated += images
    if not enroll:
        raise InvalidInput(f"no identity in {root} has {min_images} images or more")
    return Split(enroll, mated, nonmated)


def distractor_people(root: Path, k: int) -> dict[str, list[Path]]:
    """Every person of a folder-per-identity set with their first ``k`` photos: enrolled as
    extra users to grow the gallery, never searched."""
    folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not folders:
        raise InvalidInput(f"--distractors {root} has no identity folders")
    people = {
        folder.name: sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:k]
        for folder in folders
    }
    return {name: photos for name, photos in people.items() if photos}


@dataclass(frozen=True)
class Searches:
    """Every search's outcome: the mate's rank (0: absent), the top score of each mated and
    non-mated search, and the value the operating point's threshold is compared with
    (``*_decision``: the top score, or the cohort gap; NaN: no face)."""

    mate_rank: np.ndarray
    mated_score: np.ndarray
    nonmated_score: np.ndarray
    mated_decision: np.ndarray
    nonmated_decision: np.ndarray


@contextmanager
def eval_gallery(
    people: dict[str, list[Path]],
    vectors: dict[Path, np.ndarray | None],
    model_id: str,
    dimension: int,
    fusion: str,
) -> Iterator[tuple[Gallery, set[str]]]:
    """A temporary Milvus Lite gallery (``EVAL_GALLERY``, exact search, users scored by
    ``fusion``) holding these people (user id -> photos, those with an embedding), with the
    users that got at least one template."""
    with tempfile.TemporaryDirectory() as scratch:
        settings = GallerySettings.model_validate(
            {"uri": str(Path(scratch) / "eval.db"), "index_type": "FLAT", "fusion": fusion}
        )
        gallery = Gallery(settings, model_id, dimension)
        enrolled: set[str] = set()
        batch: dict[str, list[NewTemplate]] = {}
        for user, paths in people.items():
            templates = [
                NewTemplate(_template_id(user, p), vector, 1.0, p.name)
                for p in paths
                if (vector := vectors[p]) is not None
            ]
            if templates:
                enrolled.add(user)
                batch[user] = templates
            if len(batch) == 1000:
                gallery.add_many(EVAL_GALLERY, batch, settle=False)
                batch = {}
        gallery.add_many(EVAL_GALLERY, batch, settle=False)
        gallery.settle()
        yield gallery, enrolled


def search(
    calibrator: OpenSetCalibrator,
    point: OperatingPoint,
    split: Split,
    vectors: dict[Path, np.ndarray | None],
) -> Searches:
    """Every mated and non-mated search of the split, in one gallery search, decided as
    identify decides at ``point``."""
    searches = [p for p, _ in split.mated] + split.nonmated
    found = {p: v for p in searches if (v := vectors[p]) is not None}
    probes = np.stack(list(found.values())) if found else None
    hits = calibrator.search(EVAL_GALLERY, probes, point, RANKS) if probes is not None else []
    results = {p: c for p, (c, _) in zip(found, hits, strict=True)}
    top = {p: (c[0].score if c else np.nan) for p, c in results.items()}
    value = {p: np.nan if v is None else v for p, (_, v) in zip(found, hits, strict=True)}
    return Searches(
        mate_rank=np.array([_rank(results.get(p), user_id(person)) for p, person in split.mated]),
        mated_score=np.array([top.get(p, np.nan) for p, _ in split.mated]),
        nonmated_score=np.array([top.get(p, np.nan) for p in split.nonmated]),
        mated_decision=np.array([value.get(p, np.nan) for p, _ in split.mated]),
        nonmated_decision=np.array([value.get(p, np.nan) for p in split.nonmated]),
    )


def evaluate_identification(
    pipeline: FacePipeline,
    root: Path,
    k: int,
    min_images: int,
    matching: MatchingSettings,
    fusion: str,
    distractors: Path | None = None,
    fpir: float | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """``facegallery eval identify``: enroll, search, report (JSON-ready): rank-k, the
    FNIR@FPIR curve (thresholds set on the non-mated searches themselves, an oracle), and the
    decision the product would really make at its default operating point on that gallery."""
    start = time.perf_counter()
    split = split_identities(root, k, min_images)
    extra = distractor_people(distractors, k) if distractors is not None else {}
    enroll_paths = [p for paths in [*split.enroll.values(), *extra.values()] for p in paths]
    searches = [p for p, _ in split.mated] + split.nonmated
    embed = largest_face_embedder(pipeline)
    vectors = embed_images(embed, enroll_paths + searches, progress)
    people = {user_id(name): paths for name, paths in split.enroll.items()}
    extras = {DISTRACTOR + user_id(name): paths for name, paths in extra.items()}
    dimension = pipeline.embedder.dimension
    with eval_gallery({**people, **extras}, vectors, pipeline.model_id, dimension, fusion) as (
        gallery,
        enrolled,
    ):
        calibrator = OpenSetCalibrator(gallery, Thresholds(matching), matching)
        point = calibrator.operating_point(EVAL_GALLERY, fpir)
        result = search(calibrator, point, split, vectors)
    mate_ok = result.mate_rank == 1
    fnir = {}
    for target in FPIR_TARGETS:
        value = fnir_at_fpir(mate_ok, result.mated_score, result.nonmated_score, target)
        if value is not None:
            fnir[str(target)] = round(value, 6)
    measured_fpir, measured_fnir = open_set_rates(
        point.threshold, mate_ok, result.mated_decision, result.nonmated_decision
    )
    mated_count = max(1, len(split.mated))
    return {
        "rank1": round(float(mate_ok.sum() / mated_count), 6),
        "rank5": round(
            float(((result.mate_rank >= 1) & (result.mate_rank <= 5)).sum() / mated_count), 6
        ),
        "fnir_at_fpir": fnir,
        "fusion": fusion,
        "operating_point": {
            "method": point.method,
            "statistic": point.statistic,
            "target_fpir": point.target_fpir,
            "threshold": round(point.threshold, 6),
            "gallery_users": point.gallery_users,
            "measured_fpir": round(measured_fpir, 6),
            "measured_fnir": round(measured_fnir, 6),
        },
        "gallery_users": point.gallery_users,
        "distractor_users": len(enrolled - set(people)),
        "mated_probes": len(split.mated),
        "nonmated_probes": len(split.nonmated),
        "failed_to_enroll": len(set(people) - enrolled),
        "failed_probes": sum(vectors[p] is None for p in searches),
        "seconds": round(time.perf_counter() - start, 2),
        "model_id": pipeline.model_id,
    }


def _template_id(user: str, photo: Path) -> str:
    """Hash-uniform, as the service makes them (self-calibration samples by id range)."""
    return hashlib.sha256(f"{user}\0{photo}".encode()).hexdigest()[:32]


def user_id(folder: str) -> str:
    """Folder names become user ids; anything outside the id alphabet becomes '_'."""
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "_.@:-") else "_" for c in folder)
    return cleaned if cleaned[:1].isalnum() else "u" + cleaned


def _rank(candidates: list[Candidate] | None, user: str) -> int:
    """1-based rank of ``user`` among the candidates, 0 when absent or not searched."""
    for position, candidate in enumerate(candidates or [], start=1):
        if candidate.user_id == user:
            return position
    return 0
