"""The precision gate: may a model at a reduced precision stand in for fp32 under the same
model id?

A gallery enrolled on one machine is searched with probes from another, and auto may pick
different precisions on the two. So the gate asks what matters for that, on a labelled pairs
set: the pairs are scored with one side's face made at fp32 and the other's at the reduced
precision (both ways: fp32 gallery and reduced probe, and the reverse), and 10-fold accuracy
and TAR at FAR 1e-3 must stay within ``tolerance`` (0.1 point) of fp32 against fp32, and so
must a gallery and probes both at the reduced precision. They are measured at fp32's
operating points (each fold's fp32 threshold; the fp32 threshold for FAR 1e-3), because
thresholds are calibrated per model id and the reduced precision runs under the same id: a
precision that shifted every score would be caught, not re-fitted; the false accept rate at
that threshold must not rise by more than the tolerance either.

A recognizer (`run_gate`) embeds the same aligned crops (each image's largest face, found
and aligned once) at both precisions. A detector (`run_detector_gate`) finds and aligns the
faces at both precisions, and one fp32 recognizer embeds both sets of crops, so the pairs
measure the detector's precision end to end. Each also has a bound on how far each face's
output may move (the issue's "agreement"): a recognizer's two embeddings of a face, and a
detector's two sets of landmarks; the accuracy on one set of pairs cannot see a rare large
move that a held-out set might meet.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facegallery.core.errors import InvalidInput
from facegallery.decisions.rates import tar_at_far
from facegallery.evaluation.metrics import accuracy, kfold_accuracy
from facegallery.evaluation.pairs import Pair
from facegallery.evaluation.runner import IMAGE_BATCH, cosine, embed_crops, largest_faces
from facegallery.runtime.gates import GateVerdict, measured_here
from facegallery.vision.embed import FaceEmbedder
from facegallery.vision.pipeline import AlignedFace, FaceFinder

TOLERANCE = 0.001  # the largest drop allowed: 0.1 point
GATE_FAR = 1e-3
# Agreement bounds. A pair's score moves by at most sqrt(2 (1 - c)) per face whose two
# embeddings have cosine c: 0.045 at 0.999, half the standard deviation of impostor scores
# (0.089 for SFace on celeba_150), so 99% of faces may move no further.
MIN_COSINE_P01 = 0.999
Faces = dict[str, AlignedFace | None]  # image name -> its largest face, None when faceless
Vectors = dict[str, np.ndarray | None]  # image name -> its embedding, None when faceless


def pair_faces(finder: FaceFinder, root: Path, pairs: list[Pair]) -> Faces:
    """Each image of the pairs: its largest face, detected and aligned."""
    names = sorted({p.img_a for p in pairs} | {p.img_b for p in pairs})
    paths = [root / n for n in names]
    faces = [
        face
        for i in range(0, len(paths), IMAGE_BATCH)
        for face in largest_faces(finder, paths[i : i + IMAGE_BATCH])
    ]
    return dict(zip(names, faces, strict=True))


def face_crops(finder: FaceFinder, root: Path, pairs: list[Pair]) -> dict[str, np.ndarray | None]:
    """Each image of the pairs: its largest face's aligned crop (None when faceless)."""
    return _crops(pair_faces(finder, root, pairs))


def _crops(faces: Faces) -> dict[str, np.ndarray | None]:
    return {name: face.crop if face else None for name, face in faces.items()}


class MovedOnePixel(FaceFinder):
    """A finder that sees each image moved one pixel right and down (its first row and column
    repeated): the detector's own jitter, which bounds a reduced precision's."""

    def decode(self, data: bytes | np.ndarray) -> np.ndarray:
        return cv2.copyMakeBorder(super().decode(data), 1, 0, 1, 0, cv2.BORDER_REPLICATE)


def run_gate(
    crops: dict[str, np.ndarray | None],
    pairs: list[Pair],
    reference: FaceEmbedder,
    reduced: FaceEmbedder,
    precision: str,
    pairs_set: str,
    tolerance: float = TOLERANCE,
) -> GateVerdict:
    """Measure the recognizer ``reduced`` (at ``precision``) against ``reference`` (the same
    model at fp32) on ``pairs``, and decide."""
    _enough_impostors(pairs, pairs_set)
    full = _embedded(reference, crops)
    low = _embedded(reduced, crops)
    agreement = _cosines(full, low)
    reasons = []
    if not agreement["p01"] >= MIN_COSINE_P01:
        reasons.append(
            f"embeddings: 1st percentile cosine to fp32 {agreement['p01']:.5f} "
            f"below {MIN_COSINE_P01}"
        )
    return _judge(
        full, low, pairs, reference.model_id, precision, pairs_set, tolerance, reasons, agreement
    )


def run_detector_gate(
    reference: Faces,
    reduced: Faces,
    moved: Faces,
    pairs: list[Pair],
    embedder: FaceEmbedder,
    model_id: str,
    precision: str,
    pairs_set: str,
    tolerance: float = TOLERANCE,
) -> GateVerdict:
    """Measure the detector ``model_id`` at ``precision`` against fp32: ``reference`` and
    ``reduced`` are each image's largest face as found at each, ``moved`` as found at fp32
    in the image moved by one pixel (`MovedOnePixel`); ``embedder`` (fp32) embeds the first
    two; decide.

    A detector's landmarks place the 112x112 crop, and its own jitter is the bound of their
    moves: at the reduced precision, the 99th percentile of each face's largest landmark
    move (as a share of the distance between the eyes) may not exceed what fp32 does when
    the image moves by one pixel, a change no camera holds still enough to avoid."""
    _enough_impostors(pairs, pairs_set)
    full = _embedded(embedder, _crops(reference))
    low = _embedded(embedder, _crops(reduced))
    shifts = _landmark_shifts(reference, reduced)
    jitter = _landmark_shifts(reference, moved, offset=1.0)
    if len(jitter) == 0:
        raise InvalidInput(f"no face of {pairs_set} was found again in its images moved one pixel")
    agreement = {
        **_pixel_agreement(reference, reduced, shifts),
        "moved_one_pixel_shift_p99": round(float(np.percentile(jitter[:, 1], 99)), 4),
        **{f"cosine_{k}": v for k, v in _cosines(full, low).items()},
    }
    reasons = []
    if not agreement["landmark_shift_p99"] <= agreement["moved_one_pixel_shift_p99"]:
        reasons.append(
            f"landmarks: 99th percentile move {agreement['landmark_shift_p99']:.4f} of the eye "
            f"distance, above fp32's on an image moved one pixel "
            f"({agreement['moved_one_pixel_shift_p99']:.4f})"
        )
    return _judge(full, low, pairs, model_id, precision, pairs_set, tolerance, reasons, agreement)


def _enough_impostors(pairs: list[Pair], pairs_set: str) -> None:
    impostors = sum(not p.same for p in pairs)
    if impostors < 1 / GATE_FAR:
        raise InvalidInput(
            f"the gate needs at least {1 / GATE_FAR:.0f} impostor pairs to measure FAR "
            f"{GATE_FAR:g}; {pairs_set} has {impostors}"
        )


def _embedded(embedder: FaceEmbedder, crops: dict[str, np.ndarray | None]) -> Vectors:
    return dict(zip(crops, embed_crops(embedder, list(crops.values())), strict=True))


def _cosines(full: Vectors, low: Vectors) -> dict[str, float]:
    """How far each face's two embeddings are apart (faces embedded at both)."""
    both = [
        float(np.dot(a, b))
        for a, b in zip(full.values(), low.values(), strict=True)
        if a is not None and b is not None
    ]
    agreement = np.array(both) if both else np.array([np.nan])
    return {
        "min": round(float(agreement.min()), 6),
        "p01": round(float(np.percentile(agreement, 1)), 6),
        "mean": round(float(agreement.mean()), 6),
    }


def _landmark_shifts(reference: Faces, other: Faces, offset: float = 0.0) -> np.ndarray:
    """Per image found in both: the largest move of its 5 landmarks in pixels, the same as a
    share of the distance between its reference eyes, and the largest move of a box side
    (``offset``: where ``other`` saw the image moved by that many pixels right and down)."""
    rows = []
    for name, face in reference.items():
        found = other[name]
        if face is None or found is None:
            continue
        points = face.detection.landmarks
        moved = float(np.linalg.norm(points - (found.detection.landmarks - offset), axis=1).max())
        eyes = float(np.linalg.norm(points[0] - points[1]))
        box = float(np.abs(face.detection.box - (found.detection.box - offset)).max())
        rows.append((moved, moved / max(eyes, 1.0), box))
    return np.array(rows, dtype=np.float64).reshape(-1, 3)


def _pixel_agreement(reference: Faces, reduced: Faces, shifts: np.ndarray) -> dict[str, float]:
    found = [(reference[n] is not None, reduced[n] is not None) for n in reference]
    if len(shifts) == 0:
        raise InvalidInput("no image had a face at both precisions: nothing to judge")

    def pct(column: int, q: float) -> float:
        return round(float(np.percentile(shifts[:, column], q)), 4)

    return {
        "faces_fp32": float(sum(a for a, _ in found)),
        "faces_reduced": float(sum(b for _, b in found)),
        "faces_at_one_only": float(sum(a != b for a, b in found)),
        "landmark_px_median": pct(0, 50),
        "landmark_px_p99": pct(0, 99),
        "landmark_px_max": pct(0, 100),
        "landmark_shift_p99": pct(1, 99),
        "box_px_p99": pct(2, 99),
        "box_px_max": pct(2, 100),
    }


def _judge(
    full: Vectors,
    low: Vectors,
    pairs: list[Pair],
    model_id: str,
    precision: str,
    pairs_set: str,
    tolerance: float,
    reasons: list[str],
    agreement: dict[str, float],
) -> GateVerdict:
    """Score the pairs in every mix of ``full`` (fp32) and ``low`` (reduced) embeddings at
    fp32's operating points, and decide (``reasons``: refusals found already)."""
    same = np.array([p.same for p in pairs], dtype=bool)
    folds = np.array([p.fold for p in pairs], dtype=int)

    def scored(gallery: Vectors, probe: Vectors) -> np.ndarray:
        return np.array([cosine(gallery[p.img_a], probe[p.img_b]) for p in pairs])

    fp32_scores = scored(full, full)
    if not np.isfinite(fp32_scores).any():
        raise InvalidInput(f"no face was found in {pairs_set}'s images: nothing to judge")
    kfold = kfold_accuracy(fp32_scores, same, folds)
    found = tar_at_far(fp32_scores, same, GATE_FAR)
    if found is None:  # too few impostor pairs with a face
        raise InvalidInput(f"{pairs_set}: too few scored impostor pairs for FAR {GATE_FAR:g}")
    point = found[1]

    def at_fp32_points(scores: np.ndarray) -> dict[str, float]:
        filled = np.where(np.isnan(scores), -np.inf, scores)
        per_fold = [
            accuracy(scores[folds == fold], same[folds == fold], threshold)
            for fold, threshold in zip(np.unique(folds[folds >= 0]), kfold.thresholds, strict=True)
        ]
        return {
            "accuracy_mean": round(float(np.mean(per_fold)), 6),
            "tar_at_far_1e-3": round(float((filled[same] >= point).mean()), 6),
            "far_at_that_threshold": round(float((filled[~same] >= point).mean()), 6),
        }

    reference_rates = at_fp32_points(fp32_scores)
    measured = {
        "fp32_gallery_reduced_probe": at_fp32_points(scored(full, low)),
        "reduced_gallery_fp32_probe": at_fp32_points(scored(low, full)),
        "reduced_gallery_reduced_probe": at_fp32_points(scored(low, low)),
    }
    for case, got in measured.items():
        for name, ref in reference_rates.items():
            # accuracy and TAR may not fall, the false accept rate may not rise, by more
            # than the tolerance (NaN: not measured, refused)
            rises = name == "far_at_that_threshold"
            fine = got[name] <= ref + tolerance if rises else got[name] >= ref - tolerance
            if not fine:
                reasons.append(f"{case}: {name} {got[name]:.4f} against fp32's {ref:.4f}")
    return GateVerdict(
        model_id=model_id,
        precision=precision,
        passed=not reasons,
        reasons=reasons,
        pairs_set=pairs_set,
        tolerance=tolerance,
        agreement=agreement,
        fp32=reference_rates,
        cross=measured,
        measured_on=measured_here(),
    )
