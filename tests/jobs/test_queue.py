"""The enrollment queue on a real redis-server: refusals at submit, idempotency keys, a full
queue, expiry, and a job surviving Redis killed with SIGKILL right after submit returned."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from facegallery.assets.samples import Samples
from facegallery.core.config import RedisServerSettings, Settings
from facegallery.core.errors import (
    AlreadyExists,
    ImageTooLarge,
    InvalidImage,
    InvalidInput,
    NotFound,
    Overloaded,
)
from facegallery.jobs import EnrollmentQueue
from facegallery.jobs.worker import Worker
from facegallery.servers.redis import RedisServer
from facegallery.servers.supervisor import free_port, process_alive
from facegallery.service.enrollment import ImageInput
from facegallery.service.face_service import FaceService
from tests.helpers import png_claiming
from tests.jobs.helpers import make_queue, orl_photos, queue_settings


@pytest.fixture
def queue(redis_server: RedisServer, settings: Settings) -> EnrollmentQueue:
    return make_queue(redis_server, settings)


def test_submit_then_a_worker_enrolls_with_per_image_outcomes(
    queue: EnrollmentQueue, service: FaceService, samples: Samples
) -> None:
    photos = [
        *orl_photos(samples, 5, 2),
        ImageInput("group.jpg", samples.photo("group.jpg").read_bytes()),
    ]
    job = queue.submit("jobs-basic", "s5", photos)
    assert job.status == "queued" and job.images == ["s5/1.png", "s5/2.png", "group.jpg"]
    waiting = queue.depth()
    assert waiting.unfinished == 1 and 0 <= waiting.oldest_s < 60
    assert Worker(queue, service.enroll).run(max_jobs=1) == 1
    done = queue.wait(job.job_id, 5)
    assert done.status == "done" and done.attempts == 1 and done.finished_at is not None
    assert [o["status"] for o in done.outcomes] == ["enrolled", "enrolled", "rejected"]
    assert done.outcomes[2]["reason"] == "multiple_faces"
    assert done.result is not None and done.result["templates"] == 2
    assert {t.template_id for t in service.templates("jobs-basic", "s5")} == {
        o["template_id"] for o in done.outcomes[:2]
    }
    depth = queue.depth()
    assert (depth.unfinished, depth.pending, depth.held_bytes, depth.oldest_s) == (0, 0, 0, 0)


@pytest.mark.parametrize(
    ("gallery", "user", "images", "error", "match"),
    [
        ('g" or gallery != "x', "u", None, InvalidInput, "gallery id"),
        ("g", 'u" || user_id != "', None, InvalidInput, "user id"),
        ("g", "u", [], InvalidInput, "at least one image"),
        ("g", "u", [ImageInput("a.jpg", b"%PDF-1.4 not an image")], InvalidImage, "a.jpg: "),
        ("g", "u", [ImageInput("e.png", b"")], InvalidImage, "empty"),
        ("g", "u", [ImageInput("t.png", b"\x89PNG\r\n\x1a\n\x00")], InvalidImage, "t.png"),
    ],
)
def test_bad_jobs_are_refused_at_submit(
    queue: EnrollmentQueue,
    samples: Samples,
    gallery: str,
    user: str,
    images: list[ImageInput] | None,
    error: type[Exception],
    match: str,
) -> None:
    photos = orl_photos(samples, 1, 1) if images is None else images
    with pytest.raises(error, match=match):
        queue.submit(gallery, user, photos)
    assert queue.depth().unfinished == 0


def test_oversized_and_too_many_images_are_refused(
    redis_server: RedisServer, settings: Settings, samples: Samples
) -> None:
    tight = settings.model_copy(deep=True)
    tight.decode.max_bytes = 2000
    queue = make_queue(redis_server, tight, max_images_per_job=2)
    with pytest.raises(ImageTooLarge, match=r"s1/1\.png: the image is"):
        queue.submit("g", "u", orl_photos(samples, 1, 1))
    with pytest.raises(ImageTooLarge, match="pixels"):
        bomb = ImageInput("bomb.png", png_claiming(60000, 60000))
        make_queue(redis_server, settings).submit("g", "u", [bomb])
    with pytest.raises(InvalidInput, match="at most 2"):
        queue.submit("g", "u", [ImageInput(f"{i}.png", b"x") for i in range(3)])
    with pytest.raises(InvalidInput, match="idempotency key"):
        make_queue(redis_server, settings).submit("g", "u", orl_photos(samples, 1, 1), 'k"; DEL *')


def test_idempotency_key_returns_the_job_or_refuses_another_payload(
    queue: EnrollmentQueue, samples: Samples
) -> None:
    photos = orl_photos(samples, 2, 2)
    first = queue.submit("idem", "s2", photos, idempotency_key="upload-17")
    again = queue.submit("idem", "s2", photos, idempotency_key="upload-17")
    assert again.job_id == first.job_id and queue.depth().unfinished == 1
    with pytest.raises(AlreadyExists, match="upload-17"):
        queue.submit("idem", "s2", photos[:1], idempotency_key="upload-17")
    with pytest.raises(AlreadyExists):
        queue.submit("idem", "other", photos, idempotency_key="upload-17")
    assert queue.submit("idem", "s2", photos).job_id != first.job_id  # no key: a new job


def test_a_full_queue_refuses_then_accepts_once_drained(
    redis_server: RedisServer, settings: Settings, service: FaceService, samples: Samples
) -> None:
    queue = make_queue(redis_server, settings, max_queued_jobs=2, retry_after_s=7)
    for person in (3, 4):
        queue.submit("full", f"s{person}", orl_photos(samples, person, 1))
    with pytest.raises(Overloaded, match="full") as caught:
        queue.submit("full", "s6", orl_photos(samples, 6, 1))
    assert caught.value.retry_after_s == 7 and caught.value.http_status == 429
    Worker(queue, service.enroll).run(max_jobs=2)
    assert queue.submit("full", "s6", orl_photos(samples, 6, 1)).status == "queued"
    photo = orl_photos(samples, 7, 1)
    size = len(bytes(photo[0].data))  # a budget of two and a half such jobs
    budget = {"max_queued_bytes": 5 * size // 2, "max_job_bytes": size, "owner_share": 1.0}
    byte_budget = make_queue(redis_server, settings, **budget)
    for user in ("s7", "s8"):
        byte_budget.submit("full", user, photo)
    with pytest.raises(Overloaded, match="image bytes"):
        byte_budget.submit("full", "s9", photo)


def test_finished_jobs_expire(
    redis_server: RedisServer, settings: Settings, service: FaceService, samples: Samples
) -> None:
    queue = make_queue(redis_server, settings, job_ttl_s=1)
    job = queue.submit("expiry", "s8", orl_photos(samples, 8, 1))
    Worker(queue, service.enroll).run(max_jobs=1)
    assert queue.get(job.job_id).status == "done"
    time.sleep(2.2)
    with pytest.raises(NotFound, match="expired"):
        queue.get(job.job_id)
    with pytest.raises(InvalidInput, match="job id"):
        queue.get("not-a-job")


@pytest.mark.slow
def test_job_survives_redis_sigkill_right_after_submit(
    tmp_path: Path, settings: Settings, service: FaceService, samples: Samples
) -> None:
    server = RedisServer(RedisServerSettings(data_dir=tmp_path / "redis", port=free_port()))
    server.start()
    try:
        queue = EnrollmentQueue(queue_settings(server), settings.decode)
        job = queue.submit("durable", "s9", orl_photos(samples, 9, 2))
        pid = server.status().pid
        assert pid is not None
        os.killpg(pid, signal.SIGKILL)  # no shutdown, no final save: only the AOF
        while process_alive(pid, None):
            time.sleep(0.05)
        server.start()
        survived = queue.get(job.job_id)
        assert survived.status == "queued" and survived.images == ["s9/1.png", "s9/2.png"]
        assert Worker(queue, service.enroll).run(max_jobs=1) == 1
        assert queue.get(job.job_id).status == "done"
        assert len(service.templates("durable", "s9")) == 2
    finally:
        server.stop()


def test_one_key_holds_at_most_its_share_until_its_jobs_finish(
    redis_server: RedisServer, settings: Settings, samples: Samples, service: FaceService
) -> None:
    queue = make_queue(redis_server, settings, max_queued_jobs=4, owner_share=0.5)
    photos = orl_photos(samples, 18, 1)
    for user in ("u0", "u1"):
        queue.submit("share", user, photos, owner="key-1")
    with pytest.raises(Overloaded, match="this API key's share of unfinished jobs"):
        queue.submit("share", "u2", photos, owner="key-1")
    queue.submit("share", "u3", photos, owner="key-2")
    queue.submit("share", "u4", photos)  # no owner: the operator's own tools
    with pytest.raises(Overloaded, match="is full"):
        queue.submit("share", "u5", photos, owner="key-3")
    assert Worker(queue, service.enroll).run(max_jobs=1) == 1  # key-1's first job
    queue.submit("share", "u2", photos, owner="key-1")  # its share has room again
