"""Cost per face of the "accurate" pack beside the default pack's, on every CPU backend, in
one run.

The accurate pack runs the default pack's YuNet and SFace, and beside them dlib's landmark
model and chip (in the Detector) and dlib's network (in the Embedder). Measured on the sample
photos at 640x480, all in one batch, flip averaging on (the default): ms per face for the
first half (detect + align, and the accurate pack's landmarks and chip), for the second
(embed), and end to end; ``ratio`` is the accurate pack's time over the default pack's on the
same backend (the default pack is the baseline). The two packs take turns in each round
(``bench_pipeline.timed``), so the machine's drift lands on both alike.

    .venv/bin/python benchmarks/bench_packs.py --json benchmarks/results/packs.json
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from bench_pipeline import PHOTOS, timed, vga
from facegallery.assets.samples import fetch_samples
from facegallery.core.config import Settings, load_settings
from facegallery.vision.decode import decode_image
from facegallery.vision.pipeline import FacePipeline
from report import emit

PACKS = ("default", "accurate")
BACKENDS = ("onnxruntime", "openvino", "opencv", "auto")


def _pipeline(settings: Settings, pack: str, backend: str) -> FacePipeline:
    chosen = settings.model_copy(deep=True)
    chosen.models.pack = pack
    chosen.gallery.keep_crops = False  # the packs' own work only
    chosen.runtime.backend = backend  # type: ignore[assignment]  # one of BACKENDS
    return FacePipeline.from_settings(chosen)


def measure(
    settings: Settings, images: list[np.ndarray], backend: str, s: float
) -> dict[str, object]:
    """ms per face of each half and end to end, for both packs on ``backend``."""
    pipelines = {pack: _pipeline(settings, pack, backend) for pack in PACKS}
    crops = {
        pack: np.stack([f.crop for faces in p.detect_and_align(images) for f in faces])
        for pack, p in pipelines.items()
    }
    faces = len(crops["default"])
    assert len(crops["accurate"]) == faces, "both packs run the same detector"
    works: dict[str, Callable[[], object]] = {}
    for pack, pipeline in pipelines.items():
        works[f"{pack}/detect_align"] = partial(pipeline.detect_and_align, images)
        works[f"{pack}/embed"] = partial(pipeline.embedder.embed, crops[pack])
        works[f"{pack}/end_to_end"] = partial(pipeline.analyze_batch, images)
    seconds = timed(works, s)
    per_face = {name: round(1000 * t / faces, 2) for name, t in seconds.items()}
    stages = ("detect_align", "embed", "end_to_end")
    return {
        "ms_per_face": per_face,
        "ratio": {
            stage: round(seconds[f"accurate/{stage}"] / seconds[f"default/{stage}"], 2)
            for stage in stages
        },
        "faces_per_pass": faces,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measured work")
    args = parser.parse_args()
    settings = load_settings()
    samples = fetch_samples(settings.samples_dir.expanduser(), settings.models.wheelhouse)
    images = [vga(decode_image(samples.photo(n).read_bytes(), settings.decode)) for n in PHOTOS]
    emit(
        {
            "images": f"{len(images)} sample photos at 640x480, one batch, flip averaging on",
            "backends": {b: measure(settings, images, b, args.seconds) for b in BACKENDS},
        },
        args.json,
    )


if __name__ == "__main__":
    main()
