"""The gallery commands (enroll, enroll-folder, job, identify, verify, users, user,
delete-user, stats) over one client protocol, whichever way the gallery is reached:
``--url`` (or ``FACEGALLERY_URL``) http(s)://host:port or grpc://host:port calls a running
service with ``--api-key`` (or ``FACEGALLERY_API_KEY``); no URL runs the same servicer in
this process on the settings of ``--config`` (the embedded Milvus Lite file by default).

Whatever the transport: the same output for people, the API's JSON shape with ``--json``,
content-derived idempotency keys (running the same import again returns the jobs of the first
run), and one exit convention: 0 yes / done, 1 no (verify: no match; enroll: nothing
enrolled) or a failure, 2 bad input."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from tqdm import tqdm

from facegallery.cli.common import (
    ConfigOption,
    FpirOption,
    GalleryOption,
    JsonFlag,
    ThresholdOption,
    UserOption,
    emit_json,
    person_folders,
    read_image,
    reports_errors,
)
from facegallery.core.errors import InvalidInput, Unavailable
from facegallery.core.limits import IMAGE_SUFFIXES
from facegallery.wire.idempotency import content_key

if TYPE_CHECKING:
    from facegallery.client import FaceGalleryClient
    from facegallery.wire import schemas as s

app = typer.Typer()

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="FACEGALLERY_URL",
        help="A running service: http://host:port or grpc://host:port (default: in process).",
    ),
]
KeyOption = Annotated[
    str | None,
    typer.Option("--api-key", envvar="FACEGALLERY_API_KEY", help="The API key (with --url)."),
]
NoWaitFlag = Annotated[
    bool,
    typer.Option("--async", help="Return once the job is queued; `facegallery job ID` follows it."),
]
SUBMITTERS = 8  # concurrent enrollment submits over the network


def open_client(url: str | None, api_key: str | None, config: Path | None) -> FaceGalleryClient:
    """The client for ``--url``, or the servicer in process when there is none."""
    if url:
        from facegallery.client import connect

        return connect(url, api_key)
    from facegallery.core.config import load_settings
    from facegallery.serving.local_client import LocalClient

    return LocalClient(load_settings(config))


def _read(path: Path) -> tuple[str, bytes]:
    return path.name, read_image(path)


def _outcome_lines(job: s.JobView) -> list[str]:
    lines = []
    for o in job.outcomes:
        if o.status == "enrolled":
            lines += [f"  {o.image}: enrolled, warning: {w}" for w in o.warnings]
        else:
            lines.append(f"  {o.image}: rejected ({o.reason}): {o.message}")
    if job.error:
        lines.append(f"  {'error' if job.status == 'failed' else 'last error'}: {job.error}")
    return lines


def _enrolled(job: s.JobView) -> int:
    return sum(o.status == "enrolled" for o in job.outcomes)


def _finished(client: FaceGalleryClient, job_id: str) -> s.JobView:
    job = client.wait_job(job_id)
    if not job.finished:
        raise Unavailable(
            f"job {job_id} is still {job.status}; follow it with `facegallery job {job_id} --wait`"
        )
    return job


@app.command("enroll")
@reports_errors
def enroll(
    images: Annotated[list[Path], typer.Argument(help="Photos of the user, one face each.")],
    gallery: GalleryOption,
    user: UserOption,
    face_index: Annotated[
        int | None, typer.Option("--face-index", help="Which face (in `detect` order) to take.")
    ] = None,
    queued: NoWaitFlag = False,
    as_json: JsonFlag = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Enroll a user from photos: an enrollment job, followed to its per-image outcomes
    (each photo gives one template, or the reason it was refused)."""
    photos = [_read(p) for p in images]
    client = open_client(url, api_key, config)
    key = content_key(gallery, user, photos, face_index)
    job = client.enroll(gallery, user, photos, key, face_index)
    if not queued:
        job = _finished(client, job.job_id)
    if as_json:
        emit_json({**job.model_dump(mode="json"), "enrolled": _enrolled(job)}, None)
    elif queued:
        typer.echo(f"job {job.job_id}: {job.status}")
    else:
        typer.echo(
            f"job {job.job_id}: {job.status}; enrolled {_enrolled(job)} of {len(images)} "
            f"image(s) for {user} in {gallery} ({job.templates} template(s) kept)"
        )
        for line in _outcome_lines(job):
            typer.echo(line)
    if not queued and _enrolled(job) == 0:
        raise typer.Exit(1)


@app.command("enroll-folder")
@reports_errors
def enroll_folder(
    folder: Annotated[Path, typer.Argument(help="One sub-folder per person, named by user id.")],
    gallery: GalleryOption,
    as_json: JsonFlag = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Enroll everyone in a folder-per-person tree: a job per person, a progress bar over the
    jobs, then the people and photos that were refused and why. Rerunning it returns the
    same jobs (the keys come from the photos), so an interrupted import can simply be run
    again."""
    people = person_folders(folder)
    client = open_client(url, api_key, config)

    def submit(person: Path) -> tuple[str, str | None, str | None]:
        photos = sorted(p for p in person.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not photos:
            return person.name, None, "no photos"
        named = [(f"{person.name}/{p.name}", p.read_bytes()) for p in photos]
        try:
            key = content_key(gallery, person.name, named, None)
            return person.name, client.enroll(gallery, person.name, named, key).job_id, None
        except InvalidInput as exc:
            return person.name, None, exc.message

    with ThreadPoolExecutor(SUBMITTERS if url else 1) as pool:
        submitted = list(tqdm(pool.map(submit, people), total=len(people), desc="submitting"))
    refused = [{"user_id": u, "reason": why} for u, job_id, why in submitted if job_id is None]
    job_ids = [job_id for _, job_id, _ in submitted if job_id is not None]
    jobs = [_finished(client, job_id) for job_id in tqdm(job_ids, desc="jobs", unit="job")]
    outcomes = [o for j in jobs for o in j.outcomes]
    summary: dict[str, Any] = {
        "gallery": gallery,
        "jobs": job_ids,
        "users_enrolled": sum(_enrolled(j) > 0 for j in jobs),
        "images_enrolled": sum(o.status == "enrolled" for o in outcomes),
        "images_rejected": sum(o.status != "enrolled" for o in outcomes),
        "users_refused": refused,
        "failed_jobs": [
            {"job_id": j.job_id, "error": j.error} for j in jobs if j.status == "failed"
        ],
        "rejected": [o.model_dump() for o in outcomes if o.status != "enrolled"],
    }
    if as_json:
        emit_json(summary, None)
        return
    typer.echo(
        f"{summary['users_enrolled']} user(s), {summary['images_enrolled']} photo(s) enrolled "
        f"in {gallery}; {summary['images_rejected']} photo(s) rejected"
    )
    for entry in refused:
        typer.echo(f"  {entry['user_id']}: refused: {entry['reason']}")
    for failed in summary["failed_jobs"]:
        typer.echo(f"  job {failed['job_id']} failed: {failed['error']}")
    for o in summary["rejected"]:
        typer.echo(f"  {o['image']}: rejected ({o['reason']}): {o['message']}")


@app.command("job")
@reports_errors
def job(
    job_id: Annotated[str, typer.Argument(help="The id `enroll` printed.")],
    wait: Annotated[bool, typer.Option("--wait", help="Follow it until it ends.")] = False,
    as_json: JsonFlag = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """An enrollment job's status and, once done, its per-image outcomes."""
    client = open_client(url, api_key, config)
    found = _finished(client, job_id) if wait else client.get_job(job_id)
    if as_json:
        emit_json(found.model_dump(mode="json"), None)
        return
    typer.echo(
        f"job {found.job_id}: {found.status} ({found.user_id} in {found.gallery}, "
        f"{len(found.images)} image(s), {found.attempts} attempt(s))"
    )
    for line in _outcome_lines(found):
        typer.echo(line)


@app.command("identify")
@reports_errors
def identify(
    image: Annotated[Path, typer.Argument(help="A photo with any number of faces.")],
    gallery: GalleryOption,
    top_k: Annotated[int, typer.Option("--top-k", help="Candidates per face (0: default).")] = 0,
    threshold: ThresholdOption = None,
    fpir: FpirOption = None,
    as_json: JsonFlag = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Who is in this photo? Every face, its candidate users, and the decision (unknown below
    the threshold for the gallery's target FPIR at its current size)."""
    client = open_client(url, api_key, config)
    answer = client.identify(gallery, _read(image), top_k, threshold, fpir)
    if as_json:
        emit_json(answer.model_dump(mode="json"), None)
        return
    typer.echo(f"{image.name}: {len(answer.faces)} face(s), {answer.operating_point.describe()}")
    for n, face in enumerate(answer.faces, 1):
        b = face.face.box
        typer.echo(f"  {n}. box ({b.x1:.0f},{b.y1:.0f})-({b.x2:.0f},{b.y2:.0f}): {face.describe()}")


@app.command("verify")
@reports_errors
def verify(
    image: Annotated[Path, typer.Argument(help="A photo of the person claiming to be USER.")],
    gallery: GalleryOption,
    user: UserOption,
    threshold: ThresholdOption = None,
    as_json: JsonFlag = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Is the photo's largest face this user (1:1)? Exit status 1 when not."""
    answer = open_client(url, api_key, config).verify(gallery, user, _read(image), threshold)
    if as_json:
        emit_json(answer.model_dump(mode="json"), None)
    else:
        quality = answer.face.quality
        verdict = "passed" if quality.passed else "rejected: " + ", ".join(quality.reasons)
        typer.echo(
            f"{'match' if answer.match else 'no match'}: {user} score {answer.score:.3f}, "
            f"threshold {answer.threshold:.3f}, probe quality {quality.score:.2f} ({verdict})"
        )
    if not answer.match:
        raise typer.Exit(1)


@app.command("users")
@reports_errors
def users(
    gallery: GalleryOption,
    after: Annotated[str, typer.Option("--after", help="Start after this user id.")] = "",
    limit: Annotated[int, typer.Option("--limit", help="Users per page (1-1000).")] = 100,
    as_json: JsonFlag = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """User ids of the gallery, in order, a page at a time."""
    page = open_client(url, api_key, config).list_users(gallery, after, limit)
    if as_json:
        emit_json(page.model_dump(), None)
        return
    for user_id in page.user_ids:
        typer.echo(user_id)
    if page.next_page_token:
        typer.echo(f"(more: --after {page.next_page_token})", err=True)


@app.command("user")
@reports_errors
def user(
    gallery: GalleryOption,
    user: UserOption,
    as_json: JsonFlag = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """One user: when they were enrolled and their templates (ids, quality, source)."""
    found = open_client(url, api_key, config).get_user(gallery, user)
    if as_json:
        emit_json(found.model_dump(), None)
        return
    typer.echo(f"{found.user_id} in {gallery}: {len(found.templates)} template(s)")
    for t in found.templates:
        typer.echo(f"  {t.template_id} quality {t.quality:.2f} from {t.source}")


@app.command("delete-user")
@reports_errors
def delete_user(
    gallery: GalleryOption,
    user: UserOption,
    url: UrlOption = None,
    api_key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Delete every template of a user (checked gone afterwards)."""
    deleted = open_client(url, api_key, config).delete_user(gallery, user)
    typer.echo(f"deleted {user} from {gallery} ({deleted} template(s))")


@app.command("stats")
@reports_errors
def stats(
    gallery: GalleryOption,
    as_json: JsonFlag = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    config: ConfigOption = None,
) -> None:
    """How many users and templates a gallery holds."""
    found = open_client(url, api_key, config).gallery_stats(gallery)
    if as_json:
        emit_json(found.model_dump(), None)
    else:
        typer.echo(f"{gallery}: {found.users} user(s), {found.templates} template(s)")
