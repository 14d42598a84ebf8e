"""`facegallery client ...`: the served API from the command line, over the Python clients.

The server and key come from ``--url`` / ``--api-key`` or ``FACEGALLERY_URL`` /
``FACEGALLERY_API_KEY``; ``http://`` and ``https://`` URLs use the HTTP client, ``grpc://``
the gRPC one. Output is for people unless ``--json``; errors are one line and a non-zero
exit status, as everywhere in the command line.
"""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from tqdm import tqdm

from facegallery.cli.common import (
    FpirOption,
    GalleryOption,
    JsonFlag,
    ThresholdOption,
    UserOption,
    echo_outcome,
    emit_json,
    person_folders,
    read_image,
    report_enrollment,
    report_folder,
    reports_errors,
)
from facegallery.core.errors import FaceGalleryError, InvalidInput

if TYPE_CHECKING:
    from facegallery.client import GrpcClient, HttpClient
    from facegallery.wire.schemas import JobView

client_app = typer.Typer(
    help="Call a running facegallery service (HTTP or gRPC): enroll, identify, verify, users.",
    no_args_is_help=True,
)

UrlOption = Annotated[
    str,
    typer.Option(
        "--url",
        envvar="FACEGALLERY_URL",
        help="http://host:port (HTTP) or grpc://host:port (gRPC).",
    ),
]
KeyOption = Annotated[
    str | None, typer.Option("--api-key", envvar="FACEGALLERY_API_KEY", help="The API key.")
]
DEFAULT_URL = "http://127.0.0.1:8000"
SUBMITTERS = 8


def connect(url: str, api_key: str | None) -> HttpClient | GrpcClient:
    """The client the URL's scheme asks for."""
    from facegallery.client import GrpcClient, HttpClient

    if url.startswith(("http://", "https://")):
        return HttpClient(url, api_key)
    if url.startswith("grpc://"):
        return GrpcClient(url.removeprefix("grpc://"), api_key)
    raise InvalidInput(f"--url {url!r}: use http://host:port or grpc://host:port")


def _job_summary(job: JobView) -> dict[str, Any]:
    return {
        **job.model_dump(mode="json"),
        "enrolled": sum(o.status == "enrolled" for o in job.outcomes),
    }


def _read(path: Path) -> tuple[str, bytes]:
    return path.name, read_image(path)


@client_app.command("enroll")
@reports_errors
def enroll(
    images: Annotated[list[Path], typer.Argument(help="Photos of the user, one face each.")],
    gallery: GalleryOption,
    user: UserOption,
    face_index: Annotated[
        int | None, typer.Option("--face-index", help="Which face (in detect order) to take.")
    ] = None,
    as_json: JsonFlag = False,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Queue an enrollment job and wait for its per-image outcomes."""
    client = connect(url, api_key)
    job = client.wait_job(
        client.enroll(gallery, user, [_read(p) for p in images], "", face_index).job_id
    )
    summary = _job_summary(job)
    if as_json:
        emit_json(summary, None)
    else:
        prefix = f"job {job.job_id}: {job.status}; "
        report_enrollment(summary["enrolled"], len(images), user, gallery, job.templates, prefix)
        for outcome in job.outcomes:
            echo_outcome(outcome.model_dump())
        if job.error:
            typer.echo(f"  error: {job.error}")
    if summary["enrolled"] == 0:
        raise typer.Exit(1)


@client_app.command("enroll-folder")
@reports_errors
def enroll_folder(
    folder: Annotated[Path, typer.Argument(help="One sub-folder per person, named by user id.")],
    gallery: GalleryOption,
    as_json: JsonFlag = False,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Enroll everyone in a folder-per-person tree: concurrent submits, a progress bar over
    the jobs, then the photos that were rejected and why."""
    from facegallery.vision.decode import IMAGE_SUFFIXES

    people = person_folders(folder)
    client = connect(url, api_key)
    run = secrets.token_hex(4)  # a retried call within this run is one job, not two

    def submit(person: Path) -> tuple[str, str | None, str | None]:
        photos = sorted(p for p in person.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not photos:
            return person.name, None, "no photos"
        images = [(f"{person.name}/{p.name}", p.read_bytes()) for p in photos]
        try:
            key = f"folder-{run}-{person.name}"[:128]
            return person.name, client.enroll(gallery, person.name, images, key).job_id, None
        except InvalidInput as exc:
            return person.name, None, exc.message

    with ThreadPoolExecutor(SUBMITTERS) as pool:
        submitted = list(pool.map(submit, people))
    refused = [{"user_id": u, "reason": why} for u, job_id, why in submitted if job_id is None]
    jobs = []
    for _, job_id, _ in tqdm([s for s in submitted if s[1]], desc="jobs", unit="job"):
        assert job_id is not None
        jobs.append(client.wait_job(job_id))
    outcomes = [o for j in jobs for o in j.outcomes]
    summary = {
        "gallery": gallery,
        "jobs": [j.job_id for j in jobs],
        "users_enrolled": sum(any(o.status == "enrolled" for o in j.outcomes) for j in jobs),
        "images_enrolled": sum(o.status == "enrolled" for o in outcomes),
        "images_rejected": sum(o.status != "enrolled" for o in outcomes),
        "users_refused": refused,
        "failed_jobs": [
            {"job_id": j.job_id, "error": j.error} for j in jobs if j.status == "failed"
        ],
        "rejected": [o.model_dump() for o in outcomes if o.status != "enrolled"],
    }
    report_folder(summary, as_json)


@client_app.command("identify")
@reports_errors
def identify(
    image: Annotated[Path, typer.Argument(help="A photo with any number of faces.")],
    gallery: GalleryOption,
    top_k: Annotated[int, typer.Option("--top-k", help="Candidates per face (0: default).")] = 0,
    threshold: ThresholdOption = None,
    fpir: FpirOption = None,
    as_json: JsonFlag = False,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Who is in the photo: every face against the gallery."""
    answer = connect(url, api_key).identify(gallery, _read(image), top_k, threshold, fpir)
    if as_json:
        emit_json(answer.model_dump(mode="json"), None)
        return
    point = answer.operating_point.describe()
    typer.echo(f"{image.name}: {len(answer.faces)} face(s), {point}")
    for n, face in enumerate(answer.faces, 1):
        b = face.face.box
        where = f"  {n}. box ({b.x1:.0f},{b.y1:.0f})-({b.x2:.0f},{b.y2:.0f})"
        typer.echo(f"{where}: {face.describe()}")


@client_app.command("verify")
@reports_errors
def verify(
    image: Annotated[Path, typer.Argument(help="A photo of the person claiming to be USER.")],
    gallery: GalleryOption,
    user: UserOption,
    as_json: JsonFlag = False,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Is the photo's largest face this user (1:1)? Exit status 1 when not."""
    answer = connect(url, api_key).verify(gallery, user, _read(image))
    if as_json:
        emit_json(answer.model_dump(mode="json"), None)
    else:
        verdict = "match" if answer.match else "no match"
        typer.echo(
            f"{image.name} claims {user}: {verdict} "
            f"(score {answer.score:.3f}, threshold {answer.threshold:.3f})"
        )
    if not answer.match:
        raise typer.Exit(1)


@client_app.command("users")
@reports_errors
def users(
    gallery: GalleryOption,
    after: Annotated[str, typer.Option("--after", help="Start after this user id.")] = "",
    limit: Annotated[int, typer.Option("--limit", help="Users per page (1-1000).")] = 100,
    as_json: JsonFlag = False,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """User ids of the gallery, in order, a page at a time."""
    page = connect(url, api_key).list_users(gallery, after, limit)
    if as_json:
        emit_json(page.model_dump(), None)
        return
    for user_id in page.user_ids:
        typer.echo(user_id)
    if page.next_page_token:
        typer.echo(f"(more: --after {page.next_page_token})", err=True)


@client_app.command("user")
@reports_errors
def user(
    gallery: GalleryOption,
    user: UserOption,
    as_json: JsonFlag = False,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """One user and their templates."""
    found = connect(url, api_key).get_user(gallery, user)
    if as_json:
        emit_json(found.model_dump(), None)
        return
    typer.echo(f"{found.user_id}: {len(found.templates)} template(s)")
    for t in found.templates:
        typer.echo(f"  {t.template_id}  quality {t.quality:.2f}  from {t.source}")


@client_app.command("delete-user")
@reports_errors
def delete_user(
    gallery: GalleryOption,
    user: UserOption,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Remove a user and all their templates."""
    deleted = connect(url, api_key).delete_user(gallery, user)
    typer.echo(f"deleted {user} from {gallery} ({deleted} template(s))")


@client_app.command("stats")
@reports_errors
def stats(
    gallery: GalleryOption,
    as_json: JsonFlag = False,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Users and templates in the gallery."""
    found = connect(url, api_key).gallery_stats(gallery)
    if as_json:
        emit_json(found.model_dump(), None)
    else:
        typer.echo(f"{gallery}: {found.users} user(s), {found.templates} template(s)")


@client_app.command("job")
@reports_errors
def job(
    job_id: Annotated[str, typer.Argument(help="The id `client enroll` printed.")],
    wait: Annotated[bool, typer.Option("--wait", help="Follow it until it ends.")] = False,
    as_json: JsonFlag = False,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """An enrollment job's status and per-image outcomes."""
    client = connect(url, api_key)
    found = client.wait_job(job_id) if wait else client.get_job(job_id)
    if as_json:
        emit_json(found.model_dump(mode="json"), None)
        return
    typer.echo(
        f"job {found.job_id}: {found.status} ({found.user_id} in {found.gallery}, "
        f"{len(found.images)} image(s), {found.attempts} attempt(s))"
    )
    if found.error:
        typer.echo(f"  error: {found.error}")
    for outcome in found.outcomes:
        echo_outcome(outcome.model_dump())


@client_app.command("health")
@reports_errors
def health(url: UrlOption = DEFAULT_URL) -> None:
    """Whether the service answers (no key needed)."""
    import grpc
    import httpx
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        if url.startswith("grpc://"):
            with grpc.insecure_channel(url.removeprefix("grpc://")) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                answer = stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
        else:
            connect(url, None)  # the URL's scheme is checked the same way
            status = httpx.get(f"{url}/v1/health", timeout=10).json()["status"]
    except grpc.RpcError as exc:
        why = f"{exc.code().name}: {exc.details()}"
        raise FaceGalleryError(f"{url} does not answer its health check ({why})") from None
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        raise FaceGalleryError(f"{url} does not answer its health check ({exc})") from None
    typer.echo(f"{url}: {status}")
    if status != "SERVING":
        raise typer.Exit(1)
