"""`facegallery demo`: the main job on photos that ship in registry packages. It enrolls a few
people, then identifies and verifies, including a match, a non-match, an unknown face and a
refused enrollment. One script over a `FaceGalleryClient`: through the service (the whole
stack started on this machine in a scratch directory on free ports, called over HTTP, then
stopped), or ``--embedded`` in process on a Milvus Lite file, no servers."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from facegallery.cli.common import ConfigOption, reports_errors

if TYPE_CHECKING:
    from facegallery.assets.samples import Samples
    from facegallery.client import FaceGalleryClient
    from facegallery.core.config import Settings

app = typer.Typer()
GALLERY = "demo"
CLAIMS = ("barack-obama", "joe-biden")  # obama2.jpg claims to be each in turn
Photo = tuple[str, bytes]


@app.command("demo")
@reports_errors
def demo(
    embedded: Annotated[
        bool,
        typer.Option("--embedded", help="In process on a Milvus Lite file: no servers, no Ray."),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Enroll sample people, then identify and verify: through the service (the whole stack
    started and stopped on this machine), or --embedded."""
    from facegallery.assets.samples import fetch_samples
    from facegallery.core.config import load_settings

    settings = load_settings(config)
    samples = fetch_samples(settings.samples_dir.expanduser(), settings.models.wheelhouse)
    if embedded:
        from facegallery.serving.local_client import LocalClient

        typer.echo(f"in process: gallery '{GALLERY}' in {settings.gallery.uri}")
        run_demo(LocalClient(settings), samples, typer.echo)
    else:
        served_demo(settings, samples, typer.echo)


def served_demo(settings: Settings, samples: Samples, say: Callable[[str], None]) -> None:
    """The demo through the service: stack up on free ports, the script over HTTP, stack down."""
    from facegallery.client import HttpClient
    from facegallery.servers.stack import Stack
    from facegallery.servers.supervisor import free_port

    settings = settings.model_copy(deep=True)
    settings.stack.data_dir = Path(tempfile.mkdtemp(prefix="facegallery-demo-"))
    settings.redis.port, settings.milvus.port = free_port(), free_port()
    settings.milvus.metrics_port = free_port()
    settings.serving.http_port, settings.serving.grpc_port = free_port(), free_port()
    settings.serving.metrics_port, settings.serving.ray_metrics_port = free_port(), free_port()
    stack = Stack(settings)
    say(f"starting redis, milvus, the served API and its metrics (data in {stack.data_dir}) ...")
    start = time.monotonic()
    info = stack.up()
    try:
        assert info.new_key is not None
        say(
            f"up in {time.monotonic() - start:.0f} s: HTTP {info.http_url}, gRPC {info.grpc_target}"
        )
        run_demo(HttpClient(info.http_url, info.new_key), samples, say)
    finally:
        say("\nstopping: " + ", ".join(stack.down()))
        shutil.rmtree(stack.data_dir, ignore_errors=True)  # a scratch stack


def run_demo(client: FaceGalleryClient, samples: Samples, say: Callable[[str], None]) -> None:
    """The script: print each step and its answer (rerunnable: it starts from an empty
    gallery)."""
    for user in client.list_users(GALLERY, page_size=1000).user_ids:
        client.delete_user(GALLERY, user)

    say("\nenroll (asynchronous jobs)")
    jobs = {user: client.enroll(GALLERY, user, photos) for user, photos in people(samples).items()}
    for user, job in jobs.items():
        done = client.wait_job(job.job_id)
        enrolled = sum(o.status == "enrolled" for o in done.outcomes)
        say(f"  {user}: job {done.status}, {enrolled} of {len(done.outcomes)} photo(s) enrolled")
        for o in done.outcomes:
            if o.status != "enrolled":
                say(f"    {o.image} refused ({o.reason}): {o.message}")

    say("\nidentify (1:N)")
    for (name, data), truth in probes(samples):
        answer = client.identify(GALLERY, (name, data))
        for face in answer.faces:
            say(f"  {name} ({truth}): {face.describe()}")
    say(f"  ({answer.operating_point.describe()}, model {answer.model_id})")

    say("\nverify (1:1)")
    probe = _photo(samples, "obama2.jpg")
    for claim in CLAIMS:
        verdict = client.verify(GALLERY, claim, probe)
        said = "match" if verdict.match else "no match"
        say(f"  {probe[0]} claims {claim}: {said} (score {verdict.score:.3f})")
    stats = client.gallery_stats(GALLERY)
    say(f"\ngallery '{GALLERY}': {stats.users} users, {stats.templates} templates")


def people(samples: Samples) -> dict[str, list[Photo]]:
    """Who the demo enrolls (the group photo is refused: several faces, no face index)."""
    return {
        "barack-obama": [_photo(samples, "obama.jpg"), _photo(samples, "obama3.jpg")],
        "joe-biden": [_photo(samples, "biden.jpg")],
        "eileen-collins": [_photo(samples, "astronaut.png")],
        **{f"orl-s{n}": [_orl(samples, n, k) for k in (1, 2, 3)] for n in range(1, 6)},
        "someone": [_photo(samples, "group.jpg")],
    }


def probes(samples: Samples) -> list[tuple[Photo, str]]:
    """What the demo identifies, and who it really is."""
    return [
        (_photo(samples, "obama2.jpg"), "Barack Obama, another photo"),
        (_orl(samples, 3, 9), "ORL person s3, another photo"),
        (_photo(samples, "grace_hopper.jpg"), "Grace Hopper, never enrolled"),
    ]


def _photo(samples: Samples, name: str) -> Photo:
    return name, samples.photo(name).read_bytes()


def _orl(samples: Samples, person: int, shot: int) -> Photo:
    """ORL photos are PGM files, which the API does not take: sent as PNG."""
    import cv2

    image = cv2.imread(str(samples.orl / f"s{person}" / f"{shot}.pgm"), cv2.IMREAD_GRAYSCALE)
    assert image is not None
    ok, png = cv2.imencode(".png", image)
    assert ok
    return f"orl/s{person}/{shot}.pgm", png.tobytes()
