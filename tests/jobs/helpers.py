"""What the jobs tests share: queues of their own on the session's Redis, ORL photos."""

from __future__ import annotations

import uuid

from facegallery.assets.samples import Samples
from facegallery.core.config import QueueSettings, Settings
from facegallery.jobs import EnrollmentQueue
from facegallery.servers.redis import RedisServer
from facegallery.service.enrollment import ImageInput
from tests.helpers import encode, read_bgr


def queue_settings(redis_server: RedisServer, **overrides: object) -> QueueSettings:
    """Settings for a queue nobody else uses (its own key prefix)."""
    return QueueSettings(url=redis_server.uri, prefix=f"t{uuid.uuid4().hex[:12]}", **overrides)


def make_queue(
    redis_server: RedisServer, settings: Settings, **overrides: object
) -> EnrollmentQueue:
    return EnrollmentQueue(queue_settings(redis_server, **overrides), settings.decode)


def orl_photos(samples: Samples, person: int, count: int) -> list[ImageInput]:
    """ORL photos of one person as PNG bytes (the queue takes encoded images)."""
    photos = []
    for k in range(1, count + 1):
        image = read_bgr(samples.orl / f"s{person}" / f"{k}.pgm")
        photos.append(ImageInput(f"s{person}/{k}.png", encode(image)))
    return photos
