"""Errors that reveal nothing: credentials in a server URL never reach a message, and a
worker's unexpected failure is stored in its job as a reference to the log, not as the
exception's text (paths, addresses)."""

from __future__ import annotations

import logging

import pytest

from facegallery.assets.samples import Samples
from facegallery.core.config import Settings
from facegallery.core.errors import Unavailable, redacted
from facegallery.jobs import EnrollmentQueue
from facegallery.jobs.worker import Worker
from facegallery.servers.redis import RedisServer
from facegallery.servers.supervisor import free_port
from facegallery.service.enrollment import EnrollResult, Fence, ImageInput
from facegallery.serving.keys import KeyStore
from tests.jobs.helpers import orl_photos, queue_settings

PASSWORD = "s3cret-Pa55word"


def test_redacted_drops_credentials_only() -> None:
    assert redacted(f"redis://:{PASSWORD}@cache:6379/0") == "redis://***@cache:6379/0"
    assert redacted(f"redis://app:{PASSWORD}@10.0.0.5/2") == "redis://***@10.0.0.5/2"
    assert redacted("http://127.0.0.1:19530") == "http://127.0.0.1:19530"
    assert redacted("redis://:pa/ss?w#rd@cache:6379/0") == "redis://***@cache:6379/0"


def test_a_password_in_the_queue_url_never_reaches_a_message(
    redis_server: RedisServer, settings: Settings
) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"  # nothing listens there
    queue = EnrollmentQueue(
        queue_settings(redis_server).model_copy(update={"url": url}), settings.decode
    )
    calls = [
        lambda: KeyStore(url, "p").authenticate("fgk_abc_def"),
        lambda: queue.get("0" * 32),
        queue.depth,
    ]
    for call in calls:
        with pytest.raises(Unavailable) as refused:
            call()
        assert PASSWORD not in refused.value.message
        assert "***@127.0.0.1" in refused.value.message


def test_an_unexpected_worker_error_is_stored_as_a_reference(
    redis_server: RedisServer,
    settings: Settings,
    samples: Samples,
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue = EnrollmentQueue(queue_settings(redis_server, max_deliveries=5), settings.decode)
    job = queue.submit("g", "s3", orl_photos(samples, 3, 1))

    def crash(
        g: str, u: str, images: list[ImageInput], face: int | None, fence: Fence
    ) -> EnrollResult:
        raise RuntimeError(f"open /srv/secret/models failed at 10.1.2.3 ({PASSWORD})")

    with caplog.at_level(logging.ERROR):
        assert Worker(queue, crash).run_once()
    stored = queue.get(job.job_id)
    assert stored.status == "queued" and stored.error is not None
    assert stored.error.startswith("internal error (reference ")
    for secret in ("/srv/secret", "10.1.2.3", PASSWORD):
        assert secret not in stored.error
    reference = stored.error.split("reference ")[1].split(")")[0]
    assert any(reference in r.getMessage() for r in caplog.records)  # the log has the rest
