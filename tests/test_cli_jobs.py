"""The queue through the real CLI: `enroll --async`, `enroll-folder --async`, `job`, with a
real worker consuming a real redis-server, and the clear errors."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from facegallery.assets.samples import Samples
from facegallery.cli import app
from facegallery.core.config import Settings
from facegallery.jobs import EnrollmentQueue
from facegallery.jobs.worker import Worker
from facegallery.servers.redis import RedisServer
from facegallery.service.face_service import FaceService
from tests.helpers import read_bgr
from tests.jobs.helpers import queue_settings

runner = CliRunner()


@pytest.fixture
def queue(
    redis_server: RedisServer, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> EnrollmentQueue:
    qs = queue_settings(redis_server, block_ms=100)
    monkeypatch.setenv("FACEGALLERY_QUEUE__URL", qs.url)
    monkeypatch.setenv("FACEGALLERY_QUEUE__PREFIX", qs.prefix)
    return EnrollmentQueue(qs, settings.decode)


@pytest.fixture
def worker(queue: EnrollmentQueue, service: FaceService) -> Iterator[Worker]:
    """A real worker in a thread, on the session's service."""
    running = Worker(queue, service.enroll)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    yield running
    running.stop.set()
    thread.join(30)


def _run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_enroll_async_then_job(worker: Worker, samples: Samples, service: FaceService) -> None:
    photo = samples.photo
    code, out, _ = _run(
        "enroll", "--async", "-g", "cli-async", "-u", "obama",
        str(photo("obama.jpg")), str(photo("group.jpg")), "--json",
    )  # fmt: skip
    assert code == 0, out
    result = json.loads(out)
    assert result["enrolled"] == 1 and result["images"][1]["reason"] == "multiple_faces"
    assert [t.source for t in service.templates("cli-async", "obama")] == ["obama.jpg"]
    code, out, _ = _run("enroll", "--async", "-g", "cli-async", "-u", "collins",
                        str(photo("astronaut.png")))  # fmt: skip
    assert code == 0 and "enrolled 1 of 1 image(s) for collins" in out
    code, out, _ = _run("job", result["job_id"], "--json")
    job = json.loads(out)
    assert code == 0 and job["status"] == "done" and job["user_id"] == "obama"
    code, out, _ = _run("job", result["job_id"])
    assert out.startswith(f"job {result['job_id']}: done (obama in cli-async, 2 image(s)")
    assert "group.jpg: rejected (multiple_faces)" in out


def test_enroll_folder_async_is_idempotent(
    worker: Worker, samples: Samples, service: FaceService, tmp_path: Path
) -> None:
    import cv2

    for person in (14, 15):
        (tmp_path / f"s{person}").mkdir()
        for k in (1, 2):
            image = read_bgr(samples.orl / f"s{person}" / f"{k}.pgm")
            cv2.imwrite(str(tmp_path / f"s{person}" / f"{k}.png"), image)
    (tmp_path / "empty").mkdir()
    code, out, _ = _run("enroll-folder", "--async", str(tmp_path), "-g", "folder-async", "--json")
    assert code == 0, out
    summary = json.loads(out)
    assert summary["users_enrolled"] == 2 and summary["images_enrolled"] == 4
    assert summary["users_refused"] == [{"user_id": "empty", "reason": "no photos"}]
    assert len(summary["jobs"]) == 2
    code, again, _ = _run("enroll-folder", "--async", str(tmp_path), "-g", "folder-async", "--json")
    assert code == 0 and json.loads(again) == summary  # the same jobs, not new work
    assert len(service.templates("folder-async", "s14")) == 2


def test_queue_errors_are_one_line(queue: EnrollmentQueue, samples: Samples) -> None:
    code, _, err = _run("job", "not-a-job")
    assert code == 2 and err.startswith("error: invalid job id")
    code, _, err = _run("job", "0" * 32)
    assert code == 1 and "does not exist" in err
    code, _, err = _run(
        "enroll", "--async", "--timeout", "0.5", "-g", "nobody-home", "-u", "obama",
        str(samples.photo("obama.jpg")),
    )  # fmt: skip
    assert code == 1 and "is a worker running" in err
    code, _, err = _run("enroll", "--async", "-g", "bad gallery", "-u", "x",
                        str(samples.photo("obama.jpg")))  # fmt: skip
    assert code == 2 and "invalid gallery id" in err
