"""Accuracy on the development face sets: facegallery against OpenCV's reference pipeline.

For every set under --root that has a pairs.csv, in one run: facegallery's default pack,
OpenCV's own pipeline on the same model files (same pairs, same folds, same metrics code), and
facegallery's second pack. Prints JSON (and writes it with --json).

    .venv/bin/python benchmarks/eval_vs_opencv.py --root ../shared/faces \
        --json benchmarks/results/accuracy.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from facegallery.core.config import Settings, load_settings
from facegallery.evaluation.pairs import read_pairs
from facegallery.evaluation.runner import evaluate_pairs, pairs_report, score_pairs
from facegallery.vision.pipeline import FacePipeline
from opencv_reference import OpenCVReference
from report import emit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="folder of face sets")
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    parser.add_argument(
        "--reference-score-threshold",
        type=float,
        default=0.6,
        help="FaceDetectorYN score threshold of the reference (0.6 reproduces the figures in "
        "shared/faces/README.md)",
    )
    parser.add_argument("--skip-second-pack", action="store_true")
    args = parser.parse_args()

    settings = load_settings()
    reference = OpenCVReference(settings, args.reference_score_threshold)
    ours = FacePipeline.from_settings(settings)
    second = None if args.skip_second_pack else _second_pack(settings)

    sets: dict[str, dict[str, object]] = {}
    for pairs_file in sorted(args.root.glob("*/pairs.csv")):
        root, pairs = pairs_file.parent, read_pairs(pairs_file)
        start = time.perf_counter()
        scored = score_pairs(root, pairs, reference.embed_paths, progress=False)
        baseline = pairs_report(scored, time.perf_counter() - start, "opencv")
        report = evaluate_pairs(ours, root, pairs, progress=False)[0]
        gain = report["accuracy_mean"] - baseline["accuracy_mean"]
        row: dict[str, object] = {
            "facegallery": report,
            "opencv_reference": baseline,
            "accuracy_gain_points": round(100 * gain, 3),
        }
        if second is not None:
            row["facegallery_second_pack"] = evaluate_pairs(second, root, pairs, progress=False)[0]
        sets[root.name] = row
        print(
            f"{root.name}: facegallery {report['accuracy_mean']} vs OpenCV "
            f"{baseline['accuracy_mean']}",
            flush=True,
        )
    results = {
        "reference": "cv2.FaceDetectorYN + cv2.FaceRecognizerSF.alignCrop/feature, "
        f"score threshold {args.reference_score_threshold}, largest face",
        "sets": sets,
    }
    emit(results, args.json)


def _second_pack(settings: Settings) -> FacePipeline:
    other = settings.model_copy(deep=True)
    other.models.pack = "insightface"
    other.models.accept_noncommercial_licence = True
    return FacePipeline.from_settings(other)


if __name__ == "__main__":
    main()
