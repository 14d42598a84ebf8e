"""The demo of the main job on the embedded defaults, on photos that ship in registry packages.

It runs the real pipeline: detection with the quality gate on a group photo, then how close
the embeddings of the same and of different people are.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from facegallery.config import Settings
from facegallery.pipeline import FacePipeline
from facegallery.samples import fetch_samples

PORTRAITS = {
    "obama.jpg": "Barack Obama",
    "obama2.jpg": "Barack Obama",
    "biden.jpg": "Joe Biden",
    "astronaut.png": "Eileen Collins",
    "grace_hopper.jpg": "Grace Hopper",
}


def run_demo(settings: Settings, say: Callable[[str], None]) -> None:
    """Print what the pipeline makes of the sample photos."""
    samples = fetch_samples(settings.samples_dir.expanduser(), settings.models.wheelhouse)
    pipeline = FacePipeline.from_settings(settings)
    say(f"models: {pipeline.detector.model_id} + {pipeline.model_id}")

    faces = pipeline.analyze(samples.photo("group.jpg").read_bytes())
    say(f"\ngroup.jpg: {len(faces)} faces")
    for i, face in enumerate(faces, start=1):
        verdict = "ok" if face.quality.passed else "rejected: " + ", ".join(face.quality.reasons)
        yaw = face.quality.pose.yaw
        say(f"  face {i}: quality {face.quality.score:.2f}, yaw {yaw:+.0f} degrees, {verdict}")

    vectors = {}
    for name in PORTRAITS:
        found = pipeline.analyze_batch(
            [pipeline.decode(samples.photo(name).read_bytes())], largest_only=True
        )[0]
        if found and found[0].embedding is not None:
            vectors[name] = found[0].embedding
    say("\ncosine similarity of the largest faces (same person: high; different: low)")
    names = list(vectors)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            same = "same person " if PORTRAITS[a] == PORTRAITS[b] else "different   "
            score = float(np.dot(vectors[a], vectors[b]))
            say(f"  {same} {score:+.3f}  {a} ({PORTRAITS[a]}) vs {b} ({PORTRAITS[b]})")
