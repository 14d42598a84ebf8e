"""The in-process client's jobs: run in the call, kept beside the gallery, with the queue's
idempotency and expiry (a real FaceService on the session's Milvus Lite file)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from facegallery.assets.samples import Samples
from facegallery.core.config import QueueSettings, Settings
from facegallery.core.errors import AlreadyExists, InvalidInput, NotFound
from facegallery.jobs.inline import InlineJobs
from facegallery.service.enrollment import ImageInput
from facegallery.service.face_service import FaceService


def _jobs(path: Path, service: FaceService, settings: Settings, ttl_s: int = 3600) -> InlineJobs:
    return InlineJobs(path, QueueSettings(job_ttl_s=ttl_s), settings.decode, service.enroll)


def test_a_key_returns_its_job_across_instances_and_refuses_other_photos(
    service: FaceService, settings: Settings, samples: Samples, tmp_path: Path
) -> None:
    obama = [ImageInput("obama.jpg", samples.photo("obama.jpg").read_bytes())]
    first = _jobs(tmp_path / "jobs.sqlite", service, settings)
    job = first.submit("inline", "obama", obama, "k-1")
    assert job.status == "done" and job.result is not None and job.result["templates"] == 1
    again = _jobs(tmp_path / "jobs.sqlite", service, settings)  # another process, say
    assert again.submit("inline", "obama", obama, "k-1").job_id == job.job_id
    assert again.get(job.job_id).outcomes == job.outcomes
    biden = [ImageInput("biden.jpg", samples.photo("biden.jpg").read_bytes())]
    with pytest.raises(AlreadyExists, match="k-1"):
        again.submit("inline", "obama", biden, "k-1")
    with pytest.raises(InvalidInput, match="idempotency key"):
        again.submit("inline", "obama", obama, "no spaces allowed")
    assert len(service.templates("inline", "obama")) == 1  # nothing enrolled twice


def test_a_finished_job_is_forgotten_after_its_time(
    service: FaceService, settings: Settings, samples: Samples, tmp_path: Path
) -> None:
    jobs = _jobs(tmp_path / "jobs.sqlite", service, settings, ttl_s=1)
    photo = [ImageInput("astronaut.png", samples.photo("astronaut.png").read_bytes())]
    job = jobs.submit("inline-ttl", "collins", photo, "k-2")
    assert jobs.get(job.job_id).status == "done"
    time.sleep(1.2)
    with pytest.raises(NotFound, match="finished and expired"):
        jobs.get(job.job_id)
    assert jobs.submit("inline-ttl", "collins", photo, "k-2").job_id != job.job_id
