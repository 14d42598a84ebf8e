"""What verify's score does to its false accepts: the user's best template (``max``, what
verify did before) against the gallery's fusion (``top2_mean``, what it does now), at the
shipped 1:1 threshold, on real embeddings.

Each person of ``celeba_150`` and ``att_orl`` with more than K photos is enrolled with their
first K photos (K = 1, 2, 3, 5); every other photo of every set member is a probe: a genuine
claim when it is the person's, an impostor claim against every other enrolled person. The
baseline, measured in the same run, is the single-pair rate the threshold was calibrated
for: each probe against one template (the person's first photo). The product's pipeline
embeds every photo once (largest face, flip averaging as configured); the scores are numpy
over those embeddings, the same arithmetic as ``FaceService.verify`` (``user_score``).

    .venv/bin/python benchmarks/bench_verify.py --json benchmarks/results/verify.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from facegallery.core.config import load_settings
from facegallery.decisions.thresholds import Thresholds
from facegallery.evaluation.runner import embed_images, largest_face_embedder
from facegallery.gallery.fusion import user_score
from facegallery.training.data import identity_photos
from facegallery.vision.pipeline import FacePipeline
from report import FACES, emit

TEMPLATES = (1, 2, 3, 5)
FUSIONS = ("max", "top2_mean")


def people(pipeline: FacePipeline, root: Path) -> dict[str, np.ndarray]:
    """Each person's photo embeddings (n, D), in file order; faceless photos dropped."""
    photos = identity_photos(root)
    vectors = embed_images(largest_face_embedder(pipeline), [p for _, p in photos], True)
    found: dict[str, list[np.ndarray]] = {}
    for person, photo in photos:
        if (vector := vectors[photo]) is not None:
            found.setdefault(person, []).append(vector)
    return {person: np.stack(v) for person, v in found.items()}


def rates(embedded: dict[str, np.ndarray], k: int, threshold: float) -> dict[str, object]:
    """Genuine and impostor accept rates with ``k`` templates per person, per fusion."""
    enrolled = {p: v for p, v in embedded.items() if len(v) > k}
    accepted = {f: {"genuine": 0, "impostor": 0} for f in FUSIONS}
    claims = {"genuine": 0, "impostor": 0}
    for person, vectors in enrolled.items():
        templates = vectors[:k]
        for other, probes in embedded.items():
            kind = "genuine" if other == person else "impostor"
            scores = (probes[k:] if other == person else probes) @ templates.T
            claims[kind] += len(scores)
            for fusion in FUSIONS:
                fused = [user_score(row, fusion) for row in scores]
                accepted[fusion][kind] += int(np.sum(np.array(fused) >= threshold))
    return {
        "people": len(enrolled),
        "genuine_claims": claims["genuine"],
        "impostor_claims": claims["impostor"],
        **{
            fusion: {
                "tar": round(accepted[fusion]["genuine"] / claims["genuine"], 5),
                "far": round(accepted[fusion]["impostor"] / claims["impostor"], 6),
                "false_accepts": accepted[fusion]["impostor"],
            }
            for fusion in FUSIONS
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    settings = load_settings()
    pipeline = FacePipeline.from_settings(settings)
    threshold = Thresholds(settings.matching).threshold(pipeline.model_id)
    sets = {}
    for name in ("celeba_150", "att_orl"):
        embedded = people(pipeline, FACES / name)
        sets[name] = {f"templates_{k}": rates(embedded, k, threshold) for k in TEMPLATES}
    emit(
        {
            "model_id": pipeline.model_id,
            "threshold": threshold,
            "baseline": "templates_1: one template per person, the single-pair rate",
            "sets": sets,
        },
        args.json,
    )


if __name__ == "__main__":
    main()
