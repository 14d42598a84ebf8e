"""1:N evaluation on a folder-per-identity set, through the real gallery.

People with at least ``min_images`` photos get their first ``k`` (sorted by name) enrolled;
their other photos are mated searches. People with fewer photos are not enrolled: their
photos are non-mated searches, which measure false positive identification. Rank-1 / rank-5
count a mated search as a hit when the mate is among the first 1 / 5 users returned;
FNIR@FPIR follows NIST FRVT (rank 1, threshold set on the non-mated searches). Each image
contributes its largest face, without the quality gate: this measures recognition, and a
photo without a face is a failure to enroll or a failed search, never skipped.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facegallery.config import GallerySettings
from facegallery.errors import InvalidInput
from facegallery.evaluation.metrics import FPIR_TARGETS, fnir_at_fpir
from facegallery.evaluation.runner import embed_images, largest_face_embedder
from facegallery.gallery import Candidate, Gallery, NewTemplate
from facegallery.pipeline import FacePipeline
from facegallery.vision.decode import IMAGE_SUFFIXES

EVAL_GALLERY = "eval"
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


def evaluate_identification(
    pipeline: FacePipeline, root: Path, k: int, min_images: int, progress: bool = True
) -> dict[str, Any]:
    """``facegallery eval identify``: enroll, search, report (JSON-ready)."""
    start = time.perf_counter()
    split = split_identities(root, k, min_images)
    embed = largest_face_embedder(pipeline)
    enroll_paths = [p for paths in split.enroll.values() for p in paths]
    searches = [p for p, _ in split.mated] + split.nonmated
    vectors = embed_images(embed, enroll_paths + searches, progress)

    with tempfile.TemporaryDirectory() as scratch:
        settings = GallerySettings(uri=str(Path(scratch) / "eval.db"), index_type="FLAT")
        gallery = Gallery(settings, pipeline.model_id, pipeline.embedder.dimension)
        failed_to_enroll = 0
        for number, (person, paths) in enumerate(split.enroll.items()):
            templates = [
                NewTemplate(f"{number:016x}{i:016x}", vector, 1.0, p.name)
                for i, p in enumerate(paths)
                if (vector := vectors[p]) is not None
            ]
            if not templates:
                failed_to_enroll += 1
                continue
            gallery.add(EVAL_GALLERY, _user(person), templates, settle=False)
        gallery.settle()
        found = {p: v for p in searches if (v := vectors[p]) is not None}
        hits = gallery.search(EVAL_GALLERY, np.stack(list(found.values())), RANKS) if found else []
        results = dict(zip(found, hits, strict=True))

    mate_rank = np.array([_rank(results.get(p), _user(person)) for p, person in split.mated])
    top = {p: (c[0].score if c else np.nan) for p, c in results.items()}
    mated_score = np.array([top.get(p, np.nan) for p, _ in split.mated])
    nonmated_score = np.array([top.get(p, np.nan) for p in split.nonmated])
    fnir = {}
    for fpir in FPIR_TARGETS:
        value = fnir_at_fpir(mate_rank == 1, mated_score, nonmated_score, fpir)
        if value is not None:
            fnir[str(fpir)] = round(value, 6)
    mated_count = max(1, len(split.mated))
    return {
        "rank1": round(float((mate_rank == 1).sum() / mated_count), 6),
        "rank5": round(float(((mate_rank >= 1) & (mate_rank <= 5)).sum() / mated_count), 6),
        "fnir_at_fpir": fnir,
        "gallery_users": len(split.enroll) - failed_to_enroll,
        "mated_probes": len(split.mated),
        "nonmated_probes": len(split.nonmated),
        "failed_to_enroll": failed_to_enroll,
        "failed_probes": sum(vectors[p] is None for p in searches),
        "seconds": round(time.perf_counter() - start, 2),
        "model_id": pipeline.model_id,
    }


def _user(folder: str) -> str:
    """Folder names become user ids; anything outside the id alphabet becomes '_'."""
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "_.@:-") else "_" for c in folder)
    return cleaned if cleaned[:1].isalnum() else "u" + cleaned


def _rank(candidates: list[Candidate] | None, user: str) -> int:
    """1-based rank of ``user`` among the candidates, 0 when absent or not searched."""
    for position, candidate in enumerate(candidates or [], start=1):
        if candidate.user_id == user:
            return position
    return 0
