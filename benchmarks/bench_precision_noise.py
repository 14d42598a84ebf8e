"""How far ``eval pairs`` moves when nothing that matters changes, beside what bf16 moves it.

``eval pairs`` re-fits each fold's threshold (and the threshold for FAR 1e-3) on the scores
it measures, so any change to any score moves its figures. The precision gate judges bf16 at
fp32's thresholds instead; this benchmark measures, on celeba_150 with the default id (flip
averaging on) and in the Accuracy table's own protocol, the fp32 pipeline, the same pipeline
on every image moved by one pixel (the noise floor: no camera holds that still), and bf16 for
the recognizer, the detector and both. Each image's largest face is found, aligned and
embedded once per row; only the precision or the pixel offset differs between rows.

    .venv/bin/python benchmarks/bench_precision_noise.py \
        --json benchmarks/results/precision-noise.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from facegallery.core.config import load_settings
from facegallery.evaluation.pairs import read_pairs
from facegallery.evaluation.precision_gate import Faces, MovedOnePixel, pair_faces
from facegallery.evaluation.runner import Embed, embed_crops, pairs_report, score_pairs
from facegallery.models import ModelStore
from facegallery.runtime.onnx import OnnxRuntime
from facegallery.runtime.openvino import OpenVinoRuntime
from facegallery.vision.embed import Embedder
from facegallery.vision.pipeline import FaceFinder, FacePipeline
from report import FACES, emit


def looked_up(vectors: dict[Path, np.ndarray | None]) -> Embed:
    """The embeddings made already, as an `Embed`: eval pairs' own scoring and report run on
    them (the Accuracy table's protocol), with each row's faces found and embedded once."""
    return lambda paths: [vectors[path] for path in paths]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    settings = load_settings()  # flip averaging on: the default id
    root = FACES / "celeba_150"
    pairs = read_pairs(root / "pairs.csv")
    pipeline = FacePipeline.from_settings(settings)
    if not isinstance(pipeline.embedder, Embedder):
        parser.error("one recognizer only: the default pack")
    yunet, sface = ModelStore(settings.models).load_configured()
    runtime = settings.runtime
    recognizers = {
        "fp32": pipeline.embedder.on_runtime(OnnxRuntime(sface.path, runtime)),
        "bf16": pipeline.embedder.on_runtime(OpenVinoRuntime(sface.path, runtime, "bf16")),
    }
    fp32 = pipeline.detector.on_runtime(OnnxRuntime(yunet.path, runtime))
    bf16 = pipeline.detector.on_runtime(OpenVinoRuntime(yunet.path, runtime, "bf16"))
    found: dict[str, Faces] = {
        "fp32": pair_faces(FaceFinder(fp32, settings), root, pairs),
        "fp32, images moved one pixel": pair_faces(MovedOnePixel(fp32, settings), root, pairs),
        "bf16": pair_faces(FaceFinder(bf16, settings), root, pairs),
    }
    rows = {
        "fp32 (the Accuracy table)": ("fp32", "fp32"),
        "fp32, every image moved one pixel": ("fp32, images moved one pixel", "fp32"),
        "SFace bf16": ("fp32", "bf16"),
        "YuNet bf16": ("bf16", "fp32"),
        "both bf16": ("bf16", "bf16"),
    }
    results: dict[str, object] = {"set": "celeba_150", "model_id": pipeline.model_id}
    for row, (detector, recognizer) in rows.items():
        crops = [face.crop if face else None for face in found[detector].values()]
        embedded = embed_crops(recognizers[recognizer], crops)
        vectors = dict(zip((root / name for name in found[detector]), embedded, strict=True))
        scores = score_pairs(root, pairs, looked_up(vectors), progress=False)
        report = pairs_report(scores, 0.0, pipeline.model_id)
        results[row] = {
            k: report[k] for k in ("accuracy_mean", "accuracy_std", "auc", "tar_at_far")
        }
    emit(results, args.json)


if __name__ == "__main__":
    main()
