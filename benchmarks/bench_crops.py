"""What keeping aligned crops (``gallery.keep_crops``) costs per template, measured.

Every photo of ``celeba_150`` and ``att_orl`` goes through the product's decode, detector and
alignment as they run with crops kept; its largest face's sheet (the aligned crop and dlib's
chip: what is kept, whatever the pack) is encoded as the crop store encodes it
(``encode_crop``: lossless PNG, base64 text) and measured, beside the baseline of what a
template costs without it (its float32 embedding: the configured pack's).

    .venv/bin/python benchmarks/bench_crops.py --json benchmarks/results/crops.json
"""

from __future__ import annotations

import argparse
import base64
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facegallery.core.config import load_settings
from facegallery.gallery.crops import encode_crop
from facegallery.models import ModelStore
from facegallery.training.data import identity_photos
from facegallery.vision.pipeline import (
    FaceFinder,
    build_detector,
    build_embedder,
    sheet_cutting,
)
from report import FACES, emit


def crop_sizes(finder: FaceFinder, root: Path) -> dict[str, float]:
    """Stored (base64) and PNG bytes of each photo's largest face's sheet."""
    stored, png = [], []
    photos = [photo for _, photo in identity_photos(root)]
    for photo in tqdm(photos, desc=root.name, unit="photo"):
        found = finder.detect_images([photo.read_bytes()], largest_only=True, sheets=True)[0]
        if isinstance(found, Exception) or not found:
            continue
        text = encode_crop(found[0].crop)
        stored.append(len(text))
        png.append(len(base64.b64decode(text)))
    return {
        "crops": len(stored),
        "png_mean_bytes": round(float(np.mean(png))),
        "stored_mean_bytes": round(float(np.mean(stored))),
        "stored_p50_bytes": round(float(np.median(stored))),
        "stored_max_bytes": int(np.max(stored)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    settings = load_settings()
    detector = ModelStore(settings.models).load_configured()[0]
    settings.gallery.keep_crops = True  # what is measured: what keeping crops keeps
    finder = FaceFinder(build_detector(detector, settings), settings, sheet_cutting(settings)[0])
    embedding_bytes = 4 * build_embedder(settings).dimension
    sets = {name: crop_sizes(finder, FACES / name) for name in ("celeba_150", "att_orl")}
    celeba = sets["celeba_150"]["stored_mean_bytes"]
    emit(
        {
            "pack": settings.models.pack,
            "baseline_embedding_bytes": embedding_bytes,
            "sets": sets,
            "celeba_150_stored_over_embedding": round(celeba / embedding_bytes),
            "celeba_150_gb_per_million_templates": round(celeba * 1e6 / 1e9, 1),
        },
        args.json,
    )


if __name__ == "__main__":
    main()
