"""The precision gate: may a reduced-precision recognizer stand in for fp32 under the same
model id?

A gallery enrolled on one machine is searched with probes embedded on another, and auto may
pick different precisions on the two. So the gate asks what matters for that: on a labelled
pairs set, the pairs are scored with one side's face embedded at fp32 and the other's at the
reduced precision (both ways: fp32 gallery and reduced probe, and the reverse), and 10-fold
accuracy and TAR at FAR 1e-3 must stay within ``tolerance`` (0.1 point) of fp32 against
fp32, and so must a gallery and probes both at the reduced precision. They are measured at
fp32's operating points (each fold's fp32 threshold; the fp32 threshold for FAR 1e-3),
because thresholds are calibrated per model id and the reduced precision runs under the
same id: a precision that shifted every score would be caught, not re-fitted; the false
accept rate at that threshold must not rise by more than the tolerance either. Both
precisions embed the same aligned crops (each image's largest face, found and aligned
once), so only the recognizer's precision differs. The gate also reports how far each
image's two embeddings are apart (their cosine): a symptom, not the criterion.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facegallery.core.errors import InvalidInput
from facegallery.decisions.rates import tar_at_far
from facegallery.evaluation.metrics import accuracy, kfold_accuracy
from facegallery.evaluation.pairs import Pair
from facegallery.evaluation.runner import IMAGE_BATCH, cosine, embed_crops, largest_face_crops
from facegallery.runtime.gates import GateVerdict
from facegallery.vision.embed import Embedder
from facegallery.vision.pipeline import FacePipeline

TOLERANCE = 0.001  # the largest drop allowed: 0.1 point
GATE_FAR = 1e-3
Vectors = dict[str, np.ndarray | None]  # image name -> its embedding, None when faceless


def face_crops(finder: FacePipeline, root: Path, pairs: list[Pair]) -> Vectors:
    """Each image of the pairs: its largest face, aligned (None when unreadable or faceless)."""
    names = sorted({p.img_a for p in pairs} | {p.img_b for p in pairs})
    paths = [root / n for n in names]
    crops = [
        crop
        for i in range(0, len(paths), IMAGE_BATCH)
        for crop in largest_face_crops(finder, paths[i : i + IMAGE_BATCH])
    ]
    return dict(zip(names, crops, strict=True))


def run_gate(
    crops: Vectors,
    pairs: list[Pair],
    reference: Embedder,
    reduced: Embedder,
    precision: str,
    pairs_set: str,
    tolerance: float = TOLERANCE,
) -> GateVerdict:
    """Measure ``reduced`` (the model at ``precision``) against ``reference`` (the same
    model at fp32) on ``pairs``, and decide."""
    same = np.array([p.same for p in pairs], dtype=bool)
    folds = np.array([p.fold for p in pairs], dtype=int)
    if (~same).sum() < 1 / GATE_FAR:
        raise InvalidInput(
            f"the gate needs at least {1 / GATE_FAR:.0f} impostor pairs to measure FAR "
            f"{GATE_FAR:g}; {pairs_set} has {(~same).sum()}"
        )
    names = list(crops)
    full = dict(zip(names, embed_crops(reference, list(crops.values())), strict=True))
    low = dict(zip(names, embed_crops(reduced, list(crops.values())), strict=True))

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
    reasons = []
    for case, got in measured.items():
        for name, ref in reference_rates.items():
            # accuracy and TAR may not fall, the false accept rate may not rise, by more
            # than the tolerance (NaN: not measured, refused)
            rises = name == "far_at_that_threshold"
            fine = got[name] <= ref + tolerance if rises else got[name] >= ref - tolerance
            if not fine:
                reasons.append(f"{case}: {name} {got[name]:.4f} against fp32's {ref:.4f}")
    both = [
        float(np.dot(a, b))
        for a, b in zip(full.values(), low.values(), strict=True)
        if a is not None and b is not None
    ]
    agreement = np.array(both) if both else np.array([np.nan])
    return GateVerdict(
        model_id=reference.model_id,
        precision=precision,
        passed=not reasons,
        reasons=reasons,
        pairs_set=pairs_set,
        tolerance=tolerance,
        agreement={
            "min": round(float(agreement.min()), 6),
            "p01": round(float(np.percentile(agreement, 1)), 6),
            "mean": round(float(agreement.mean()), 6),
        },
        fp32=reference_rates,
        cross=measured,
    )
