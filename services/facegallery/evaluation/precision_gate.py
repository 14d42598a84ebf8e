"""The precision gate: may a reduced-precision recognizer stand in for fp32 under the same
model id?

A gallery enrolled on one machine is searched with probes embedded on another, and auto may
pick different precisions on the two. So the gate asks what matters for that: on a labelled
pairs set, the pairs are scored with one side's face embedded at fp32 and the other's at the
reduced precision (both ways: fp32 gallery and reduced probe, and the reverse), and 10-fold
accuracy and TAR at FAR 1e-3 must stay within ``tolerance`` (0.1 point) of fp32 against
fp32. Both precisions embed the same aligned crops (the fp32 pipeline's detector finds and
aligns each image's largest face once), so only the recognizer's precision differs. It also
reports how far each image's two embeddings are apart (their cosine), which is a symptom,
not the criterion: what a gallery sees is the pairs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facegallery.decisions.rates import tar_at_far
from facegallery.evaluation.metrics import kfold_accuracy
from facegallery.evaluation.pairs import Pair
from facegallery.evaluation.runner import IMAGE_BATCH, cosine, embed_crops, largest_face_crops
from facegallery.runtime.gates import GateVerdict
from facegallery.vision.embed import Embedder
from facegallery.vision.pipeline import FacePipeline

TOLERANCE = 0.001  # the largest drop allowed: 0.1 point
GATE_FAR = 1e-3
Vectors = dict[str, np.ndarray | None]  # image name -> its embedding, None when faceless


def run_gate(
    pipeline: FacePipeline,
    reduced: Embedder,
    precision: str,
    root: Path,
    pairs: list[Pair],
    tolerance: float = TOLERANCE,
) -> GateVerdict:
    """Measure ``reduced`` (the same model at another precision) against ``pipeline``'s
    fp32 embedder on ``pairs`` under ``root``, and decide."""
    names = sorted({p.img_a for p in pairs} | {p.img_b for p in pairs})
    paths = [root / n for n in names]
    crops = [
        c
        for i in range(0, len(paths), IMAGE_BATCH)
        for c in largest_face_crops(pipeline, paths[i : i + IMAGE_BATCH])
    ]
    full = embed_crops(pipeline.embedder, crops)
    low = embed_crops(reduced, crops)
    fp32 = dict(zip(names, full, strict=True))
    cut = dict(zip(names, low, strict=True))
    same = np.array([p.same for p in pairs], dtype=bool)
    folds = np.array([p.fold for p in pairs], dtype=int)

    def rates(gallery: Vectors, probe: Vectors) -> dict[str, float]:
        scores = np.array([cosine(gallery[p.img_a], probe[p.img_b]) for p in pairs])
        if not np.isfinite(scores).any():  # a runtime that gives no usable embedding at all
            return {"accuracy_mean": 0.0, "tar_at_far_1e-3": 0.0}
        tar = tar_at_far(scores, same, GATE_FAR)
        return {
            "accuracy_mean": round(float(kfold_accuracy(scores, same, folds).mean), 6),
            "tar_at_far_1e-3": round(tar[0], 6) if tar else float("nan"),
        }

    reference = rates(fp32, fp32)
    cross = {
        "fp32_gallery_reduced_probe": rates(fp32, cut),
        "reduced_gallery_fp32_probe": rates(cut, fp32),
    }
    reasons = [
        f"{direction}: {measure} {got[measure]:.4f} against fp32's {reference[measure]:.4f}"
        for direction, got in cross.items()
        for measure in reference
        if not got[measure] >= reference[measure] - tolerance
    ]
    both = [(a, b) for a, b in zip(full, low, strict=True) if a is not None and b is not None]
    agreement = np.array([float(np.dot(a, b)) for a, b in both] or [1.0])
    return GateVerdict(
        model_id=pipeline.model_id,
        precision=precision,
        passed=not reasons,
        reasons=reasons,
        pairs_set=root.name,
        tolerance=tolerance,
        agreement={
            "min": round(float(agreement.min()), 6),
            "p01": round(float(np.percentile(agreement, 1)), 6),
            "mean": round(float(agreement.mean()), 6),
        },
        fp32=reference,
        cross=cross,
    )
