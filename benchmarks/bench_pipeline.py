"""Speed of facegallery's pipeline beside OpenCV's on the same model files, in one run.

Detection ms per 640x480 image, embedding faces/s at batch 1 and 32, end-to-end faces/s.
OpenCV (cv2.FaceDetectorYN / cv2.FaceRecognizerSF) is the baseline; ``speedup`` is
baseline time / our time (above 1: we are faster). Embedding is measured with and without
flip averaging, which doubles the recognizer's work by design.

    .venv/bin/python benchmarks/bench_pipeline.py --json benchmarks/results/speed.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from facegallery.config import Settings, load_settings
from facegallery.pipeline import FacePipeline
from facegallery.samples import fetch_samples
from facegallery.vision.decode import decode_image
from opencv_reference import OpenCVReference
from report import emit

PHOTOS = ("astronaut.png", "grace_hopper.jpg", "obama.jpg", "obama2.jpg", "group.jpg", "biden.jpg")


def timed(work: Callable[[], object], min_seconds: float, min_runs: int = 5) -> float:
    """Median seconds per call, after one warm-up call."""
    work()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        work()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def vga(image: np.ndarray) -> np.ndarray:
    """Centre-crop to 4:3 and resize to 640x480."""
    h, w = image.shape[:2]
    if w * 3 > h * 4:
        cw = h * 4 // 3
        image = image[:, (w - cw) // 2 : (w - cw) // 2 + cw]
    else:
        ch = w * 3 // 4
        image = image[(h - ch) // 2 : (h - ch) // 2 + ch]
    return cv2.resize(image, (640, 480), interpolation=cv2.INTER_AREA)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument(
        "--backend",
        choices=["onnxruntime", "opencv", "auto"],
        help="runtime.backend for facegallery's side (default: the settings')",
    )
    args = parser.parse_args()
    settings = load_settings()
    if args.backend:
        settings.runtime.backend = args.backend
    samples = fetch_samples(settings.samples_dir.expanduser(), settings.models.wheelhouse)
    images = [vga(decode_image(samples.photo(n).read_bytes(), settings.decode)) for n in PHOTOS]

    reference = OpenCVReference(settings, score_threshold=settings.detect.score_threshold)
    ours = FacePipeline.from_settings(_flip(settings, flip=True))
    plain = FacePipeline.from_settings(_flip(settings, flip=False))
    crops = np.stack([f.crop for faces in ours.detect_and_align(images) for f in faces])
    faces_per_pass = len(crops)
    s = args.seconds

    detect_ref = timed(lambda: [reference.detect(im) for im in images], s) / len(images)
    detect_one = timed(lambda: [ours.detector.detect([im]) for im in images], s) / len(images)
    detect_batch = timed(lambda: ours.detector.detect(images), s) / len(images)

    embed: dict[str, object] = {}
    for batch in (1, 32):
        chunk = np.resize(crops, (batch, *crops.shape[1:]))
        ref = timed(partial(_opencv_features, reference, chunk), s)
        no_flip = timed(partial(plain.embedder.embed, chunk), s)
        flip = timed(partial(ours.embedder.embed, chunk), s)
        embed[f"batch_{batch}"] = {
            "opencv_faces_per_s": round(batch / ref, 1),
            "facegallery_faces_per_s": round(batch / no_flip, 1),
            "facegallery_flip_tta_faces_per_s": round(batch / flip, 1),
            "speedup": round(ref / no_flip, 2),
            "speedup_with_flip_tta": round(ref / flip, 2),
        }

    def reference_end_to_end() -> None:
        for image in images:
            for face in reference.detect(image):
                reference.embed_face(image, face)

    e2e_ref = timed(reference_end_to_end, s)
    e2e_plain = timed(lambda: plain.analyze_batch(images), s)
    e2e_flip = timed(lambda: ours.analyze_batch(images), s)

    results = {
        "versions": {"onnxruntime": ort.__version__, "opencv": cv2.__version__},
        "backends": {
            "detector": type(ours.detector.runtime).__name__,
            "recognizer": type(ours.embedder.runtime).__name__,
            "setting": settings.runtime.backend,
        },
        "images": f"{len(images)} sample photos at 640x480, {faces_per_pass} faces",
        "detection_ms_per_image": {
            "opencv": round(1000 * detect_ref, 2),
            "facegallery_batch_1": round(1000 * detect_one, 2),
            f"facegallery_batch_{len(images)}": round(1000 * detect_batch, 2),
            "speedup_batch_1": round(detect_ref / detect_one, 2),
            f"speedup_batch_{len(images)}": round(detect_ref / detect_batch, 2),
        },
        "embedding": embed,
        "end_to_end_faces_per_s": {
            "opencv": round(faces_per_pass / e2e_ref, 1),
            "facegallery": round(faces_per_pass / e2e_plain, 1),
            "facegallery_flip_tta": round(faces_per_pass / e2e_flip, 1),
            "speedup": round(e2e_ref / e2e_plain, 2),
            "speedup_with_flip_tta": round(e2e_ref / e2e_flip, 2),
        },
    }
    emit(results, args.json)


def _opencv_features(reference: OpenCVReference, crops: np.ndarray) -> None:
    for crop in crops:
        reference.recognizer.feature(crop)


def _flip(settings: Settings, flip: bool) -> Settings:
    copy = settings.model_copy(deep=True)
    copy.embed.flip_tta = flip
    return copy


if __name__ == "__main__":
    main()
