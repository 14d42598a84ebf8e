"""Run the pipeline over an evaluation set and report the protocol's numbers."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from facegallery.core.errors import InvalidImage
from facegallery.decisions.rates import tar_at_far
from facegallery.evaluation.metrics import FAR_TARGETS, auc, kfold_accuracy, roc_curve
from facegallery.evaluation.pairs import Pair
from facegallery.vision.embed import FaceEmbedder
from facegallery.vision.pipeline import AlignedFace, FaceFinder, FacePipeline

IMAGE_BATCH = 8

# image path -> its largest face's embedding (D,), or None when none can be had.
Embed = Callable[[list[Path]], list[np.ndarray | None]]


@dataclass(frozen=True)
class PairScores:
    """Cosine similarity per pair (NaN where an image had no face), with labels and folds."""

    scores: np.ndarray
    same: np.ndarray
    folds: np.ndarray
    images: int


def largest_faces(finder: FaceFinder, paths: list[Path]) -> list[AlignedFace | None]:
    """Each image's largest face, detected and aligned; None where the image is unreadable
    or faceless (scored as failed pairs, not skipped)."""
    decoded: list[np.ndarray | None] = []
    for path in paths:
        try:
            decoded.append(finder.decode(path.read_bytes()))
        except (OSError, InvalidImage):
            decoded.append(None)
    present = [image for image in decoded if image is not None]
    faces = iter(finder.detect_and_align(present, largest_only=True))
    largest: list[AlignedFace | None] = []
    for image in decoded:
        found = next(faces) if image is not None else []
        largest.append(found[0] if found else None)
    return largest


def largest_face_crops(finder: FaceFinder, paths: list[Path]) -> list[np.ndarray | None]:
    """Each image's largest face's aligned crop (None as in `largest_faces`)."""
    return [face.crop if face else None for face in largest_faces(finder, paths)]


def embed_crops(embedder: FaceEmbedder, crops: list[np.ndarray | None]) -> list[np.ndarray | None]:
    """The embedding of each crop (None stays None), in one batched call."""
    present = [crop for crop in crops if crop is not None]
    vectors = iter(embedder.embed(np.stack(present)) if present else [])
    return [next(vectors) if crop is not None else None for crop in crops]


def largest_face_embedder(pipeline: FacePipeline) -> Embed:
    """Embed the largest face of each image file."""

    def embed(paths: list[Path]) -> list[np.ndarray | None]:
        return embed_crops(pipeline.embedder, largest_face_crops(pipeline, paths))

    return embed


def embed_images(embed: Embed, paths: list[Path], progress: bool) -> dict[Path, np.ndarray | None]:
    """Embed each image once, in batches, with a progress bar on stderr."""
    vectors: dict[Path, np.ndarray | None] = {}
    with tqdm(total=len(paths), desc="images", unit="img", disable=not progress) as bar:
        for start in range(0, len(paths), IMAGE_BATCH):
            chunk = paths[start : start + IMAGE_BATCH]
            vectors.update(zip(chunk, embed(chunk), strict=True))
            bar.update(len(chunk))
    return vectors


def score_pairs(root: Path, pairs: list[Pair], embed: Embed, progress: bool) -> PairScores:
    """Embed every distinct image once and score every pair by cosine."""
    images = sorted({p.img_a for p in pairs} | {p.img_b for p in pairs})
    vectors = embed_images(embed, [root / name for name in images], progress)
    scores = np.array([cosine(vectors[root / p.img_a], vectors[root / p.img_b]) for p in pairs])
    same = np.array([p.same for p in pairs], dtype=bool)
    folds = np.array([p.fold for p in pairs], dtype=int)
    return PairScores(scores, same, folds, len(images))


def pairs_report(result: PairScores, seconds: float, model_id: str) -> dict[str, Any]:
    """The JSON report of ``facegallery eval pairs``."""
    kfold = kfold_accuracy(result.scores, result.same, result.folds)
    tars = {}
    for far in FAR_TARGETS:
        measured = tar_at_far(result.scores, result.same, far)
        if measured is not None:
            tars[str(far)] = round(measured[0], 6)
    return {
        "accuracy_mean": round(kfold.mean, 6),
        "accuracy_std": round(kfold.std, 6),
        "auc": round(auc(result.scores, result.same), 6),
        "tar_at_far": tars,
        "threshold": round(float(np.mean(kfold.thresholds)), 6),
        "pairs": len(result.scores),
        "kfold_pairs": int((result.folds >= 0).sum()),
        "failed_pairs": int(np.isnan(result.scores).sum()),
        "images": result.images,
        "seconds": round(seconds, 2),
        "model_id": model_id,
    }


def evaluate_pairs(
    pipeline: FacePipeline, root: Path, pairs: list[Pair], progress: bool = True
) -> tuple[dict[str, Any], PairScores]:
    """``facegallery eval pairs``: the report and the raw scores (for a ROC plot)."""
    start = time.perf_counter()
    result = score_pairs(root, pairs, largest_face_embedder(pipeline), progress)
    return pairs_report(result, time.perf_counter() - start, pipeline.model_id), result


def plot_roc(result: PairScores, path: Path, label: str) -> None:
    """Save the ROC curve (TAR against FAR, log FAR axis) as an image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    far, tar = roc_curve(result.scores, result.same)
    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    ax.plot(np.maximum(far, 1e-5), tar, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_xlim(1e-4, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def cosine(a: np.ndarray | None, b: np.ndarray | None) -> float:
    if a is None or b is None:
        return float("nan")
    return float(np.dot(a, b))
