"""The demo of the main job on the embedded defaults (Milvus Lite file, CPU models), on photos
that ship in registry packages: enroll a few people, then identify and verify, including a
match, a non-match, an unknown face and a refused enrollment."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from facegallery.config import Settings
from facegallery.samples import Samples, fetch_samples
from facegallery.service import FaceService, ImageInput

GALLERY = "demo"


def run_demo(settings: Settings, say: Callable[[str], None]) -> None:
    """Print each step and its answer."""
    samples = fetch_samples(settings.samples_dir.expanduser(), settings.models.wheelhouse)
    service = FaceService.from_settings(settings)
    limit = service.thresholds.get(service.model_id)
    say(f"models {service.pipeline.detector_id} + {service.model_id}")
    say(f"gallery '{GALLERY}' in {settings.gallery.uri}")
    say(f"threshold {limit.threshold:.3f} (FAR {limit.far_target} on {limit.source})")
    for user in service.users(GALLERY, limit=1000):
        service.delete_user(GALLERY, user)

    say("\nenroll")
    people = {
        "barack-obama": [_photo(samples, "obama.jpg"), _photo(samples, "obama3.jpg")],
        "joe-biden": [_photo(samples, "biden.jpg")],
        "eileen-collins": [_photo(samples, "astronaut.png")],
        **{f"orl-s{n}": [_orl(samples, n, k) for k in (1, 2, 3)] for n in range(1, 6)},
        "someone": [_photo(samples, "group.jpg")],
    }
    for user, images in people.items():
        result = service.enroll(GALLERY, user, images)
        say(f"  {user}: {result.enrolled} of {len(images)} photo(s) enrolled")
        for outcome in result.outcomes:
            if not outcome.enrolled:
                say(f"    {outcome.image} refused ({outcome.reason}): {outcome.message}")

    say("\nidentify (1:N)")
    for probe, truth in [
        (_photo(samples, "obama2.jpg"), "Barack Obama, another photo"),
        (_orl(samples, 3, 9), "ORL person s3, another photo"),
        (_photo(samples, "grace_hopper.jpg"), "Grace Hopper, never enrolled"),
    ]:
        for answer in service.identify(GALLERY, probe.data):
            say(f"  {probe.name} ({truth}): {answer.describe()}")

    say("\nverify (1:1)")
    probe = _photo(samples, "obama2.jpg")
    for claim in ("barack-obama", "joe-biden"):
        verification = service.verify(GALLERY, claim, probe.data)
        verdict = "match" if verification.match else "no match"
        say(f"  {probe.name} claims {claim}: {verdict} (score {verification.score:.3f})")

    stats = service.stats(GALLERY)
    say(f"\ngallery '{GALLERY}': {stats.users} users, {stats.templates} templates")


def _photo(samples: Samples, name: str) -> ImageInput:
    return ImageInput(name, samples.photo(name).read_bytes())


def _orl(samples: Samples, person: int, shot: int) -> ImageInput:
    """ORL photos are PGM files: read them into arrays (the API takes arrays as well)."""
    path = samples.orl / f"s{person}" / f"{shot}.pgm"
    return ImageInput(f"orl/s{person}/{shot}.pgm", np.asarray(Image.open(path)))
