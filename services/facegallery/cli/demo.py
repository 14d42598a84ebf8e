"""The demo of the main job, on photos that ship in registry packages: enroll a few people,
then identify and verify, including a match, a non-match, an unknown face and a refused
enrollment. ``run_served_demo`` does it through the service: the whole stack on this machine
(`facegallery up` in a scratch directory, on free ports), asynchronous enrollment jobs over
HTTP, identification over gRPC, verification over HTTP, then the stack stopped.
``run_demo`` does it in process on the embedded defaults (a Milvus Lite file), no servers."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from facegallery.assets.samples import Samples, fetch_samples
from facegallery.core.config import Settings
from facegallery.service.enrollment import ImageInput
from facegallery.service.face_service import FaceService

GALLERY = "demo"


def people(samples: Samples) -> dict[str, list[ImageInput]]:
    """Who the demo enrolls (the group photo is refused: several faces, no face index)."""
    return {
        "barack-obama": [_photo(samples, "obama.jpg"), _photo(samples, "obama3.jpg")],
        "joe-biden": [_photo(samples, "biden.jpg")],
        "eileen-collins": [_photo(samples, "astronaut.png")],
        **{f"orl-s{n}": [_orl(samples, n, k) for k in (1, 2, 3)] for n in range(1, 6)},
        "someone": [_photo(samples, "group.jpg")],
    }


def probes(samples: Samples) -> list[tuple[ImageInput, str]]:
    """What the demo identifies, and who it really is."""
    return [
        (_photo(samples, "obama2.jpg"), "Barack Obama, another photo"),
        (_orl(samples, 3, 9), "ORL person s3, another photo"),
        (_photo(samples, "grace_hopper.jpg"), "Grace Hopper, never enrolled"),
    ]


CLAIMS = ("barack-obama", "joe-biden")  # obama2.jpg claims to be each in turn


def run_served_demo(settings: Settings, say: Callable[[str], None]) -> None:
    """The demo through the service: stack up, jobs, gRPC and HTTP answers, stack down."""
    from facegallery.client import GrpcClient, HttpClient
    from facegallery.servers.stack import Stack
    from facegallery.servers.supervisor import free_port

    samples = fetch_samples(settings.samples_dir.expanduser(), settings.models.wheelhouse)
    settings = settings.model_copy(deep=True)
    settings.stack.data_dir = Path(tempfile.mkdtemp(prefix="facegallery-demo-"))
    settings.redis.port, settings.milvus.port = free_port(), free_port()
    settings.milvus.metrics_port = free_port()
    settings.serving.http_port, settings.serving.grpc_port = free_port(), free_port()
    stack = Stack(settings)
    say(f"starting redis, milvus and the served API (data in {stack.data_dir}) ...")
    start = time.monotonic()
    info = stack.up()
    try:
        assert info.new_key is not None
        say(
            f"up in {time.monotonic() - start:.0f} s: HTTP {info.http_url}, gRPC {info.grpc_target}"
        )
        http = HttpClient(info.http_url, info.new_key)
        grpc = GrpcClient(info.grpc_target, info.new_key)

        say("\nenroll (asynchronous jobs over HTTP)")
        jobs = {
            user: http.enroll(GALLERY, user, [(i.name, _encoded(i)) for i in images])
            for user, images in people(samples).items()
        }
        for user, job in jobs.items():
            done = http.wait_job(job.job_id)
            enrolled = sum(o.status == "enrolled" for o in done.outcomes)
            say(
                f"  {user}: job {done.status}, {enrolled} of {len(done.outcomes)} photo(s) enrolled"
            )
            for o in done.outcomes:
                if o.status != "enrolled":
                    say(f"    {o.image} refused ({o.reason}): {o.message}")

        say("\nidentify (1:N, over gRPC)")
        for probe, truth in probes(samples):
            for face in grpc.identify(GALLERY, (probe.name, _encoded(probe))).faces:
                say(f"  {probe.name} ({truth}): {face.describe()}")

        say("\nverify (1:1, over HTTP)")
        probe = _photo(samples, "obama2.jpg")
        for claim in CLAIMS:
            answer = http.verify(GALLERY, claim, (probe.name, _encoded(probe)))
            verdict = "match" if answer.match else "no match"
            say(f"  {probe.name} claims {claim}: {verdict} (score {answer.score:.3f})")
        stats = grpc.gallery_stats(GALLERY)
        say(f"\ngallery '{GALLERY}': {stats.users} users, {stats.templates} templates")
    finally:
        say("\nstopping: " + ", ".join(stack.down()))
        shutil.rmtree(stack.data_dir, ignore_errors=True)  # a scratch stack


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
    for user, images in people(samples).items():
        result = service.enroll(GALLERY, user, images)
        say(f"  {user}: {result.enrolled} of {len(images)} photo(s) enrolled")
        for outcome in result.outcomes:
            if not outcome.enrolled:
                say(f"    {outcome.image} refused ({outcome.reason}): {outcome.message}")

    say("\nidentify (1:N)")
    for probe, truth in probes(samples):
        for answer in service.identify(GALLERY, probe.data):
            say(f"  {probe.name} ({truth}): {answer.describe()}")

    say("\nverify (1:1)")
    probe = _photo(samples, "obama2.jpg")
    for claim in CLAIMS:
        verification = service.verify(GALLERY, claim, probe.data)
        verdict = "match" if verification.match else "no match"
        say(f"  {probe.name} claims {claim}: {verdict} (score {verification.score:.3f})")

    stats = service.stats(GALLERY)
    say(f"\ngallery '{GALLERY}': {stats.users} users, {stats.templates} templates")


def _photo(samples: Samples, name: str) -> ImageInput:
    return ImageInput(name, samples.photo(name).read_bytes())


def _encoded(image: ImageInput) -> bytes:
    """What the API takes: encoded bytes (the ORL arrays become PNG)."""
    if isinstance(image.data, bytes):
        return image.data
    ok, png = cv2.imencode(".png", image.data)
    assert ok
    return png.tobytes()


def _orl(samples: Samples, person: int, shot: int) -> ImageInput:
    """ORL photos are PGM files: read them into arrays (the API takes arrays as well)."""
    path = samples.orl / f"s{person}" / f"{shot}.pgm"
    return ImageInput(f"orl/s{person}/{shot}.pgm", np.asarray(Image.open(path)))
