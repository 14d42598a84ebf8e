"""Workers under faults, with real processes, a real redis-server and the managed Milvus
server: a worker SIGKILLed mid-job, a job that fails every time, two workers racing one
user's cap, and SIGTERM finishing the job in hand."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import redis

from facegallery.assets.samples import Samples
from facegallery.core.config import GallerySettings, QueueSettings, RedisServerSettings, Settings
from facegallery.core.errors import FailedPrecondition, Restarting
from facegallery.decisions.thresholds import Thresholds
from facegallery.gallery import Gallery
from facegallery.jobs import EnrollmentQueue
from facegallery.jobs.worker import Worker
from facegallery.servers import MilvusServer
from facegallery.servers.redis import RedisServer, redis_binary
from facegallery.servers.supervisor import free_port
from facegallery.service.enrollment import EnrollResult, ImageInput
from facegallery.service.face_service import FaceService
from facegallery.vision.pipeline import FacePipeline
from tests.helpers import encode
from tests.jobs.helpers import orl_photos, queue_settings


def _mirrored(photos: list[ImageInput]) -> list[ImageInput]:
    """The photos and their mirror images: different bytes, the same person."""
    flipped = []
    for photo in photos:
        image = cv2.imdecode(np.frombuffer(bytes(photo.data), np.uint8), cv2.IMREAD_COLOR)
        assert image is not None
        mirrored = encode(cv2.flip(image, 1))
        flipped.append(ImageInput(photo.name.replace(".png", "-m.png"), mirrored))
    return photos + flipped


def _spawn_worker(
    queue: QueueSettings, milvus: MilvusServer, data: Path
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "FACEGALLERY_QUEUE__URL": queue.url,
        "FACEGALLERY_QUEUE__PREFIX": queue.prefix,
        "FACEGALLERY_QUEUE__CLAIM_IDLE_MS": str(queue.claim_idle_ms),
        "FACEGALLERY_QUEUE__BLOCK_MS": "200",
        "FACEGALLERY_GALLERY__URI": milvus.uri,
        "FACEGALLERY_MATCHING__THRESHOLDS_FILE": str(data / "thresholds.json"),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "facegallery", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def _on_server(
    milvus: MilvusServer,
    pipeline: FacePipeline,
    settings: Settings,
    model_id: str | None = None,
    cap: int = 10,
) -> FaceService:
    """The service on the managed server's gallery (what separate worker processes share)."""
    shared = settings.model_copy(deep=True)
    shared.gallery = GallerySettings(uri=milvus.uri, max_templates_per_user=cap)
    model = model_id or pipeline.model_id
    gallery = Gallery(shared.gallery, model, pipeline.embedder.dimension)
    return FaceService(pipeline, gallery, Thresholds(shared.matching), shared)


@pytest.fixture
def server_service(
    milvus_server: MilvusServer, pipeline: FacePipeline, settings: Settings
) -> FaceService:
    return _on_server(milvus_server, pipeline, settings)


@pytest.mark.slow
def test_worker_killed_mid_job_another_finishes_it_once(
    redis_server: RedisServer,
    milvus_server: MilvusServer,
    server_service: FaceService,
    settings: Settings,
    samples: Samples,
    tmp_path: Path,
) -> None:
    qs = queue_settings(redis_server, claim_idle_ms=1500)
    queue = EnrollmentQueue(qs, settings.decode)
    first = _spawn_worker(qs, milvus_server, tmp_path)
    second = None
    try:
        job = queue.submit("crash", "s10", _mirrored(orl_photos(samples, 10, 10)))
        _until(lambda: queue.get(job.job_id).status == "running", 60, "the first worker")
        first.send_signal(signal.SIGKILL)  # in the middle of the job
        first.wait(10)
        assert queue.get(job.job_id).status == "running"  # left pending, not lost
        second = _spawn_worker(qs, milvus_server, tmp_path)
        done = queue.wait(job.job_id, 90)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(10)
    assert done.status == "done" and done.attempts == 2
    enrolled = {o["template_id"] for o in done.outcomes if o["status"] == "enrolled"}
    assert len(enrolled) == 10  # the cap; the rest are reported redundant
    stored = {t.template_id for t in server_service.templates("crash", "s10")}
    assert stored == enrolled  # no loss, no duplicate
    assert server_service.gallery.user_records("crash")[0].templates == 10
    depth = queue.depth()
    assert (depth.unfinished, depth.pending, depth.dead_letters) == (0, 0, 0)


def test_a_job_failing_every_time_is_dead_lettered_with_its_reason(
    redis_server: RedisServer,
    milvus_server: MilvusServer,
    pipeline: FacePipeline,
    settings: Settings,
    samples: Samples,
) -> None:
    """The gallery made unavailable (its collection dropped under the worker)."""
    service = _on_server(milvus_server, pipeline, settings, model_id="doomed-model")
    service.gallery.drop()
    qs = queue_settings(redis_server, claim_idle_ms=100, block_ms=100, max_deliveries=2)
    queue = EnrollmentQueue(qs, settings.decode)
    job = queue.submit("doomed", "s12", orl_photos(samples, 12, 1))
    worker = Worker(queue, service.enroll)
    deadline = time.monotonic() + 30
    while not queue.get(job.job_id).finished and time.monotonic() < deadline:
        worker.run_once()
    failed = queue.get(job.job_id)
    assert failed.status == "failed" and failed.attempts == 2
    assert failed.error is not None and "gave up after 2 attempts" in failed.error
    assert "Milvus" in failed.error  # the real cause, for the operator
    assert queue.dead_letters() == [(job.job_id, failed.error)]
    assert queue.depth().unfinished == 0


def test_concurrent_jobs_for_one_user_never_exceed_the_cap(
    redis_server: RedisServer,
    milvus_server: MilvusServer,
    pipeline: FacePipeline,
    settings: Settings,
    samples: Samples,
) -> None:
    service = _on_server(milvus_server, pipeline, settings, cap=2)
    gallery = service.gallery
    queue = EnrollmentQueue(queue_settings(redis_server, block_ms=100), settings.decode)
    photos = orl_photos(samples, 11, 8)
    jobs = [queue.submit("race", "s11", photos[i : i + 2]) for i in range(0, 8, 2)]
    workers = [Worker(queue, service.enroll, f"w{i}") for i in range(2)]
    threads = [threading.Thread(target=w.run, kwargs={"max_jobs": 2}) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(queue.get(j.job_id).status == "done" for j in jobs)
    assert len(service.templates("race", "s11")) == 2
    assert gallery.user_records("race")[0].templates == 2


@pytest.mark.slow
def test_sigterm_finishes_the_job_in_hand(
    redis_server: RedisServer,
    milvus_server: MilvusServer,
    settings: Settings,
    samples: Samples,
    tmp_path: Path,
) -> None:
    qs = queue_settings(redis_server)
    queue = EnrollmentQueue(qs, settings.decode)
    worker = _spawn_worker(qs, milvus_server, tmp_path)
    try:
        job = queue.submit("graceful", "s13", _mirrored(orl_photos(samples, 13, 6)))
        _until(lambda: queue.get(job.job_id).status == "running", 60, "the worker")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    finished = queue.get(job.job_id)
    assert finished.status == "done" and finished.attempts == 1


@pytest.mark.slow
def test_a_stalled_worker_past_its_lease_never_writes_beside_the_one_that_took_over(
    redis_server: RedisServer,
    milvus_server: MilvusServer,
    server_service: FaceService,
    settings: Settings,
    samples: Samples,
    tmp_path: Path,
) -> None:
    """SIGSTOP a worker mid-job past claim_idle_ms; another takes the job and finishes it; the
    user is then deleted; SIGCONT: the stalled worker finds its lease gone (its heartbeat
    no longer renews another's lease or takes the entry back) and writes nothing."""
    qs = queue_settings(redis_server, claim_idle_ms=1500, block_ms=100)
    queue = EnrollmentQueue(qs, settings.decode)
    stalled = _spawn_worker(qs, milvus_server, tmp_path)
    try:
        job = queue.submit("fenced", "s14", _mirrored(orl_photos(samples, 14, 10)))
        _until(lambda: queue.get(job.job_id).status == "running", 60, "the first worker")
        stalled.send_signal(signal.SIGSTOP)
        assert server_service.templates("fenced", "s14") == []  # stopped before writing
        taker = Worker(queue, server_service.enroll, "taker")
        deadline = time.monotonic() + 60
        while not queue.get(job.job_id).finished and time.monotonic() < deadline:
            taker.run_once()
        done = queue.get(job.job_id)
        assert done.status == "done" and done.attempts == 2
        assert server_service.delete_user("fenced", "s14") == 10
        stalled.send_signal(signal.SIGCONT)
        time.sleep(5)  # time enough to write, had it kept writing
        assert stalled.poll() is None  # it went on working, without this job
    finally:
        stalled.send_signal(signal.SIGCONT)
        stalled.kill()
        stalled.wait(10)
    assert server_service.templates("fenced", "s14") == []
    assert server_service.gallery.user_records("fenced") == []
    after = queue.get(job.job_id)
    assert (after.status, after.attempts, after.outcomes) == ("done", 2, done.outcomes)
    assert queue.depth().pending == 0


def test_heartbeat_renews_only_what_is_still_the_workers(
    redis_server: RedisServer, settings: Settings, samples: Samples
) -> None:
    queue = EnrollmentQueue(queue_settings(redis_server, claim_idle_ms=200), settings.decode)
    queue.submit("beat", "s15", orl_photos(samples, 15, 1))
    delivery = queue.claim("slow", 100)
    assert delivery is not None
    with queue.user_lease("beat", "s15") as lease:
        assert lease is not None
        assert queue.heartbeat("slow", delivery, lease) and queue.holds(lease)
        time.sleep(0.3)
        taken = queue.claim("fast", 100)  # idle past claim_idle_ms: another worker's now
        assert taken is not None and taken.entry_id == delivery.entry_id
        assert not queue.heartbeat("slow", delivery, lease)  # never takes it back
        owner = queue.redis.xpending_range(queue.stream, "workers", "-", "+", 1)
        assert owner[0]["consumer"] == b"fast"


@pytest.mark.slow
def test_a_job_that_kills_its_workers_is_dead_lettered_with_the_reason(
    redis_server: RedisServer,
    milvus_server: MilvusServer,
    server_service: FaceService,
    settings: Settings,
    samples: Samples,
    tmp_path: Path,
) -> None:
    qs = queue_settings(redis_server, claim_idle_ms=500, block_ms=100, max_worker_losses=1)
    queue = EnrollmentQueue(qs, settings.decode)
    worker = _spawn_worker(qs, milvus_server, tmp_path)
    try:
        job = queue.submit("killer", "s16", _mirrored(orl_photos(samples, 16, 10)))
        _until(lambda: queue.get(job.job_id).status == "running", 60, "the worker")
        worker.send_signal(signal.SIGKILL)  # as the kernel's OOM killer would
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
    next_worker = Worker(queue, server_service.enroll, "next")
    deadline = time.monotonic() + 30
    while not queue.get(job.job_id).finished and time.monotonic() < deadline:
        next_worker.run_once()
    failed = queue.get(job.job_id)
    assert failed.status == "failed" and failed.error is not None
    assert "stopped 1 time" in failed.error and "not retried" in failed.error
    assert queue.dead_letters() == [(job.job_id, failed.error)]
    assert server_service.templates("killer", "s16") == []


def _bare_redis(tmp_path: Path, *options: str) -> tuple[subprocess.Popen[bytes], int]:
    """A redis-server as someone else might run it (not the project's managed one)."""
    port = free_port()
    process = subprocess.Popen(
        [str(redis_binary()), "--port", str(port), "--dir", str(tmp_path), "--save", "", *options],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    _until(lambda: _pings(client), 10, "redis-server")
    return process, port


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.mark.parametrize(
    ("options", "wanted", "refused"),
    [
        (("--appendonly", "no"), "always", True),
        (("--appendonly", "yes", "--appendfsync", "everysec"), "always", True),
        (("--appendonly", "yes", "--appendfsync", "everysec"), "everysec", False),
        (("--appendonly", "yes", "--appendfsync", "always"), "always", False),
    ],
)
def test_a_redis_that_could_lose_acknowledged_jobs_is_refused(
    settings: Settings, tmp_path: Path, options: tuple[str, ...], wanted: str, refused: bool
) -> None:
    server, port = _bare_redis(tmp_path, *options)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        queue = EnrollmentQueue(QueueSettings(url=url, appendfsync=wanted), settings.decode)
        if refused:
            with pytest.raises(FailedPrecondition, match="--appendonly yes --appendfsync"):
                Worker(queue, lambda *a: EnrollResult("g", "u", [], 0, [])).run(max_jobs=1)
        else:
            queue.ensure_durable()
    finally:
        server.kill()
        server.wait(10)


def test_a_redis_outage_makes_the_worker_wait_not_exit(
    server_service: FaceService, settings: Settings, samples: Samples, tmp_path: Path
) -> None:
    redis_settings = RedisServerSettings(data_dir=tmp_path / "redis", port=free_port())
    server = RedisServer(redis_settings)
    server.start()
    qs = QueueSettings(url=redis_settings.address, prefix="blip", block_ms=100)
    queue = EnrollmentQueue(qs, settings.decode)
    worker = Worker(queue, server_service.enroll, "patient")
    processed: list[int] = []
    thread = threading.Thread(target=lambda: processed.append(worker.run(max_jobs=1)))
    try:
        thread.start()
        time.sleep(0.5)
        server.stop()  # Redis gone while the worker waits for work
        time.sleep(2)
        assert thread.is_alive()  # waiting, not ended by the error
        server.start()
        job = queue.submit("blip", "s17", orl_photos(samples, 17, 1))
        thread.join(60)
        assert processed == [1] and queue.get(job.job_id).status == "done"
    finally:
        worker.stop.set()
        thread.join(10)
        server.stop()


def test_a_job_handed_back_for_a_busy_user_is_not_a_lost_worker(
    redis_server: RedisServer, settings: Settings, samples: Samples, service: FaceService
) -> None:
    """One worker died running the job (it shows running, no error); the next finds the
    user's lease busy and hands the job back: that is no second death, and the job runs."""
    queue = EnrollmentQueue(queue_settings(redis_server, max_worker_losses=2), settings.decode)
    job = queue.submit("busy", "s19", orl_photos(samples, 19, 1))
    queue.mark_running(job.job_id, "died", 1)
    worker = Worker(queue, service.enroll, "next")
    with queue.user_lease("busy", "s19") as held:  # another job of the user runs meanwhile
        assert held is not None
        assert worker.run_once()  # waits for the lease, then hands the job back
    assert queue.get(job.job_id).status == "queued"
    deadline = time.monotonic() + 30
    while not queue.get(job.job_id).finished and time.monotonic() < deadline:
        worker.run_once()
    assert queue.get(job.job_id).status == "done"


def test_a_model_deployment_restarting_uses_up_no_attempt(
    redis_server: RedisServer, settings: Settings, samples: Samples, service: FaceService
) -> None:
    """The models' node is lost for longer than the job's attempts would last: each try
    meets Restarting (what the served pipeline raises for a lost replica), the job is handed
    back and the worker pauses; once the models answer, the job is done, not dead-lettered."""
    qs = queue_settings(redis_server, claim_idle_ms=100, block_ms=100, max_deliveries=2)
    queue = EnrollmentQueue(qs, settings.decode)
    job = queue.submit("restart", "s21", orl_photos(samples, 21, 1))
    tries: list[int] = []

    def enroll_while_restarting(*args: Any) -> EnrollResult:
        tries.append(1)
        if len(tries) <= 2 * qs.max_deliveries:
            raise Restarting("a model deployment is restarting; retry in 1 s", retry_after_s=1)
        return service.enroll(*args)

    worker = Worker(queue, enroll_while_restarting)
    for _ in range(2 * qs.max_deliveries):
        with pytest.raises(Restarting):
            worker.run_once()  # `run` catches it and pauses
        assert queue.get(job.job_id).status == "queued" and queue.depth().dead_letters == 0
    assert worker.run(max_jobs=1) == 1
    assert queue.get(job.job_id).status == "done" and len(tries) == 2 * qs.max_deliveries + 1


def test_a_job_that_always_meets_a_restart_ends_dead_lettered(
    redis_server: RedisServer, settings: Settings, samples: Samples
) -> None:
    """A job whose every try kills the replica it runs on looks like a node lost: it is
    handed back for free only for queue.service_wait_s, then its tries count."""
    qs = queue_settings(
        redis_server, claim_idle_ms=100, block_ms=100, max_deliveries=2, service_wait_s=0.5
    )
    queue = EnrollmentQueue(qs, settings.decode)
    job = queue.submit("poison", "s22", orl_photos(samples, 22, 1))

    def enroll_killing_its_replica(*_: Any) -> EnrollResult:
        raise Restarting("a model deployment is restarting; retry in 1 s", retry_after_s=1)

    worker = Worker(queue, enroll_killing_its_replica)
    deadline = time.monotonic() + 30
    while not queue.get(job.job_id).finished and time.monotonic() < deadline:
        with contextlib.suppress(Restarting):
            worker.run_once()
    failed = queue.get(job.job_id)
    assert failed.status == "failed" and "restarting" in (failed.error or "")
    assert queue.depth().dead_letters == 1
