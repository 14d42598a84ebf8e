"""The gallery commands, in process on the embedded defaults (a Milvus Lite file): enroll,
identify, verify, the users and their templates, enrollment jobs, and the demo."""

from __future__ import annotations

import time
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
    echo_outcome,
    emit_json,
    person_folders,
    queue_for,
    read_image,
    report_enrollment,
    report_folder,
    reports_errors,
    service_for,
)
from facegallery.core.config import load_settings
from facegallery.core.errors import InvalidInput, Unavailable

if TYPE_CHECKING:
    from facegallery.jobs import EnrollmentQueue, Job
    from facegallery.service.enrollment import ImageInput


app = typer.Typer()


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
    from facegallery.cli.demo import run_demo, run_served_demo

    (run_demo if embedded else run_served_demo)(load_settings(config), typer.echo)


AsyncFlag = Annotated[
    bool,
    typer.Option(
        "--async",
        help="Queue the enrollment (Redis) for the workers, then follow the job(s) to the end.",
    ),
]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", help="With --async: seconds to wait for the jobs.")
]


@app.command("enroll")
@reports_errors
def enroll(
    images: Annotated[list[Path], typer.Argument(help="Photos of the user, one face each.")],
    gallery: GalleryOption,
    user: UserOption,
    face_index: Annotated[
        int | None, typer.Option("--face-index", help="Which face (in `detect` order) to take.")
    ] = None,
    queued: AsyncFlag = False,
    timeout: TimeoutOption = 600.0,
    as_json: JsonFlag = False,
    config: ConfigOption = None,
) -> None:
    """Enroll a user from photos: each gives one template, or a reason it was refused."""
    from facegallery.service.enrollment import ImageInput

    inputs = [ImageInput(path.name, read_image(path)) for path in images]
    if queued:
        queue = queue_for(config)
        key = _content_key(gallery, user, inputs, face_index)
        job = queue.submit(gallery, user, inputs, key, face_index)
        result = {"job_id": job.job_id, **_job_result(_follow(queue, [job.job_id], timeout)[0])}
    else:
        result = service_for(config).enroll(gallery, user, inputs, face_index).to_dict()
    if as_json:
        emit_json(result, None)
    else:
        report_enrollment(result["enrolled"], len(images), user, gallery, result["templates"])
        for outcome in result["images"]:
            echo_outcome(outcome)
    if result["enrolled"] == 0:
        raise typer.Exit(1)


@app.command("enroll-folder")
@reports_errors
def enroll_folder(
    folder: Annotated[Path, typer.Argument(help="One sub-folder per person, named by user id.")],
    gallery: GalleryOption,
    queued: AsyncFlag = False,
    timeout: TimeoutOption = 3600.0,
    as_json: JsonFlag = False,
    config: ConfigOption = None,
) -> None:
    """Enroll everyone in a folder-per-identity tree, with a summary of refused photos."""
    from facegallery.service.enrollment import ImageInput
    from facegallery.vision.decode import IMAGE_SUFFIXES

    people = person_folders(folder)
    results: list[dict[str, Any]] = []
    refused: list[dict[str, str]] = []
    submitted: list[str] = []
    queue = queue_for(config) if queued else None
    service = None if queued else service_for(config)
    for person in tqdm(people, desc="submitting" if queued else "people", unit="person"):
        photos = sorted(p for p in person.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not photos:
            refused.append({"user_id": person.name, "reason": "no photos"})
            continue
        inputs = [ImageInput(f"{person.name}/{p.name}", p.read_bytes()) for p in photos]
        try:
            if queue is not None:
                key = _content_key(gallery, person.name, inputs)
                submitted.append(queue.submit(gallery, person.name, inputs, key).job_id)
            else:
                assert service is not None
                results.append(service.enroll(gallery, person.name, inputs).to_dict())
        except InvalidInput as exc:
            refused.append({"user_id": person.name, "reason": exc.message})
    if queue is not None:
        results = [_job_result(job) for job in _follow(queue, submitted, timeout)]
    summary = {
        "gallery": gallery,
        "users_enrolled": sum(r["enrolled"] > 0 for r in results),
        "images_enrolled": sum(r["enrolled"] for r in results),
        "images_rejected": sum(r["rejected"] for r in results),
        "users_refused": refused,
        "rejected": [o for r in results for o in r["images"] if o["status"] != "enrolled"],
        **({"jobs": submitted} if queued else {}),
    }
    report_folder(summary, as_json)


@app.command("job")
@reports_errors
def job(
    job_id: Annotated[str, typer.Argument(help="The id `enroll --async` printed.")],
    wait: Annotated[float, typer.Option("--wait", help="Seconds to wait for it to end.")] = 0.0,
    as_json: JsonFlag = False,
    config: ConfigOption = None,
) -> None:
    """An enrollment job's status and, once done, its per-image outcomes."""
    found = queue_for(config).wait(job_id, wait) if wait > 0 else queue_for(config).get(job_id)
    if as_json:
        emit_json(found.to_dict(), None)
        return
    typer.echo(
        f"job {found.job_id}: {found.status} ({found.user_id} in {found.gallery}, "
        f"{len(found.images)} image(s), {found.attempts} attempt(s))"
    )
    if found.error:
        typer.echo(f"  {'error' if found.status == 'failed' else 'last error'}: {found.error}")
    for outcome in found.outcomes:
        echo_outcome(outcome)


@app.command("identify")
@reports_errors
def identify(
    image: Annotated[Path, typer.Argument(help="Photo to search the gallery with.")],
    gallery: GalleryOption,
    top_k: Annotated[int | None, typer.Option("--top-k", help="Candidates per face.")] = None,
    threshold: ThresholdOption = None,
    fpir: FpirOption = None,
    as_json: JsonFlag = False,
    config: ConfigOption = None,
) -> None:
    """Who is in this photo? Every face, its candidate users, and the decision (unknown below
    the threshold for the gallery's target FPIR at its current size)."""
    service = service_for(config)
    result = service.identify_batch(gallery, [read_image(image)], top_k, threshold, fpir)
    answers, point = result.images[0], result.operating_point
    if as_json:
        emit_json(
            {
                "gallery": gallery,
                "threshold": point.threshold,
                "operating_point": point.to_dict(),
                "model_id": service.model_id,
                "faces": [a.to_dict() for a in answers],
            },
            None,
        )
        return
    typer.echo(f"{image}: {len(answers)} face(s), {point.describe()}")
    for i, answer in enumerate(answers, start=1):
        x1, y1, x2, y2 = (round(float(v)) for v in answer.detection.box)
        typer.echo(f"  {i}. ({x1},{y1})-({x2},{y2}) {answer.describe()}")


@app.command("verify")
@reports_errors
def verify(
    image: Annotated[Path, typer.Argument(help="Photo of the person claiming to be the user.")],
    gallery: GalleryOption,
    user: UserOption,
    threshold: ThresholdOption = None,
    as_json: JsonFlag = False,
    config: ConfigOption = None,
) -> None:
    """Is the largest face in this photo the claimed user? (1:1)"""
    result = service_for(config).verify(gallery, user, read_image(image), threshold)
    if as_json:
        emit_json(result.to_dict(), None)
        return
    verdict = "match" if result.match else "no match"
    typer.echo(
        f"{verdict}: {user} score {result.score:.3f}, threshold {result.threshold:.3f}, "
        f"probe quality {result.quality.score:.2f} ({result.quality.verdict})"
    )


@app.command("users")
@reports_errors
def users(
    gallery: GalleryOption,
    after: Annotated[str | None, typer.Option("--after", help="Page cursor: last id seen.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="Page size.")] = 100,
    as_json: JsonFlag = False,
    config: ConfigOption = None,
) -> None:
    """Enrolled users of a gallery, in id order, a page at a time."""
    page = service_for(config).users(gallery, after, limit)
    if as_json:
        emit_json(
            {
                "gallery": gallery,
                "users": page,
                "next_after": page[-1] if len(page) == limit else None,
            },
            None,
        )
        return
    for user_id in page:
        typer.echo(user_id)


@app.command("user")
@reports_errors
def user(
    gallery: GalleryOption, user: UserOption, as_json: JsonFlag = False, config: ConfigOption = None
) -> None:
    """One user: when they were enrolled and their templates (ids, quality, source)."""
    record = service_for(config).get_user(gallery, user)
    if as_json:
        emit_json({"gallery": gallery, **record.to_dict()}, None)
        return
    typer.echo(f"{record.user_id} in {gallery}: {len(record.templates)} template(s)")
    for t in record.templates:
        typer.echo(f"  {t.template_id} quality {t.quality:.2f} from {t.source}")


@app.command("delete-user")
@reports_errors
def delete_user(gallery: GalleryOption, user: UserOption, config: ConfigOption = None) -> None:
    """Delete every template of a user (checked gone afterwards)."""
    deleted = service_for(config).delete_user(gallery, user)
    typer.echo(f"deleted {user} from {gallery} ({deleted} template(s))")


@app.command("stats")
@reports_errors
def stats(gallery: GalleryOption, as_json: JsonFlag = False, config: ConfigOption = None) -> None:
    """How many users and templates a gallery holds."""
    service = service_for(config)
    result = service.stats(gallery)
    if as_json:
        emit_json(
            {
                "gallery": gallery,
                "users": result.users,
                "templates": result.templates,
                "model_id": service.model_id,
            },
            None,
        )
        return
    typer.echo(
        f"{gallery}: {result.users} user(s), {result.templates} template(s) ({service.model_id})"
    )


def _content_key(
    gallery: str, user: str, inputs: list[ImageInput], face_index: int | None = None
) -> str:
    """An idempotency key from the content (the queue's own payload hash): running the
    same import again returns the jobs it made the first time instead of queueing the work
    twice."""
    from facegallery.jobs.queue import payload_hash

    return "cli-" + payload_hash(gallery, user, inputs, face_index)[:40]


def _follow(queue: EnrollmentQueue, job_ids: list[str], timeout_s: float) -> list[Job]:
    """Wait for the jobs with a progress bar; a clear error if they do not all finish."""
    deadline = time.monotonic() + timeout_s
    finished: dict[str, Job] = {}
    with tqdm(total=len(job_ids), desc="jobs", unit="job") as bar:
        while len(finished) < len(job_ids):
            for job_id in job_ids:
                if job_id not in finished and (found := queue.get(job_id)).finished:
                    finished[job_id] = found
                    bar.update()
            if len(finished) < len(job_ids):
                if time.monotonic() >= deadline:
                    waiting = len(job_ids) - len(finished)
                    raise Unavailable(
                        f"{waiting} job(s) not finished after {timeout_s:.0f} s: is a worker "
                        "running (`facegallery worker`)? Follow them with `facegallery job ID`"
                    )
                time.sleep(0.1)
    return [finished[j] for j in job_ids]


def _job_result(job: Job) -> dict[str, Any]:
    """A finished job as the enroll summary (the same shape as ``EnrollResult.to_dict()``)."""
    if job.status == "failed" or job.result is None:
        raise Unavailable(f"job {job.job_id} failed: {job.error}")
    return {**job.result, "images": job.outcomes}
