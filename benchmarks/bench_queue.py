"""Enrollment queue speed: submit latency (fsync always vs everysec) and end-to-end jobs/s with
1 and 2 worker processes, against synchronous in-process enrollment of the same images in
the same run, on the managed Milvus server and a managed redis-server.

    .venv/bin/python benchmarks/bench_queue.py --json benchmarks/results/queue.json
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facegallery.assets.samples import fetch_samples
from facegallery.core.config import (
    GallerySettings,
    MilvusServerSettings,
    QueueSettings,
    RedisServerSettings,
    load_settings,
)
from facegallery.decisions.thresholds import Thresholds
from facegallery.gallery import Gallery
from facegallery.jobs import EnrollmentQueue
from facegallery.servers import MilvusServer
from facegallery.servers.redis import RedisServer
from facegallery.servers.supervisor import free_port
from facegallery.service.enrollment import ImageInput
from facegallery.service.face_service import FaceService
from facegallery.vision.pipeline import FacePipeline
from report import emit

PHOTOS_PER_JOB = 2


def people(orl: Path, count: int) -> list[tuple[str, list[ImageInput]]]:
    """ORL people as JPEG jobs of two photos (the 40 people, then again mirrored)."""
    jobs = []
    for i in range(count):
        person, mirror = i % 40 + 1, i >= 40
        photos = []
        for k in range(1, PHOTOS_PER_JOB + 1):
            image = cv2.imread(str(orl / f"s{person}" / f"{k}.pgm"), cv2.IMREAD_COLOR)
            assert image is not None
            ok, jpeg = cv2.imencode(".jpg", cv2.flip(image, 1) if mirror else image)
            assert ok
            photos.append(ImageInput(f"s{person}/{k}.jpg", jpeg.tobytes()))
        jobs.append((f"s{person}{'m' if mirror else ''}", photos))
    return jobs


def submit_latency(fsync: str, scratch: Path, photos: list[ImageInput]) -> dict[str, Any]:
    """p50 / p99 ms of submit with Redis's appendfsync at ``fsync``."""
    settings = RedisServerSettings(data_dir=scratch / fsync, port=free_port(), appendfsync=fsync)
    limits = load_settings().decode
    with RedisServer(settings) as server:
        queue = EnrollmentQueue(QueueSettings(url=server.uri, prefix=fsync), limits)
        times = []
        for i in range(300):
            start = time.perf_counter()
            queue.submit("bench", f"user{i}", photos)
            times.append(1000 * (time.perf_counter() - start))
    return {
        "appendfsync": fsync,
        "submits": len(times),
        "bytes_per_job": sum(len(bytes(p.data)) for p in photos),
        "p50_ms": round(float(np.percentile(times, 50)), 2),
        "p99_ms": round(float(np.percentile(times, 99)), 2),
    }


def through_workers(
    workers: int, jobs: list[tuple[str, list[ImageInput]]], redis_uri: str, milvus_uri: str
) -> dict[str, Any]:
    """Jobs/s and images/s from the first submit to the last job done, workers warmed."""
    queue_settings = QueueSettings(url=redis_uri, prefix=f"w{uuid.uuid4().hex[:8]}")
    queue = EnrollmentQueue(queue_settings, load_settings().decode)
    env = {
        **os.environ,
        "FACEGALLERY_QUEUE__URL": redis_uri,
        "FACEGALLERY_QUEUE__PREFIX": queue_settings.prefix,
        "FACEGALLERY_QUEUE__BLOCK_MS": "100",
        "FACEGALLERY_GALLERY__URI": milvus_uri,
    }
    command = [sys.executable, "-m", "facegallery", "worker"]
    processes = [
        subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(workers)
    ]
    try:
        gallery = f"queue-{workers}w"
        warm = [queue.submit(gallery, f"warm{i}", jobs[0][1]) for i in range(workers)]
        for job in warm:
            assert queue.wait(job.job_id, 120).status == "done"
        start = time.perf_counter()
        ids = [queue.submit(gallery, user, photos).job_id for user, photos in jobs]
        done = [queue.wait(job_id, 600) for job_id in ids]
        seconds = time.perf_counter() - start
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(60)
    assert all(j.status == "done" for j in done)
    return {
        "workers": workers,
        "jobs": len(jobs),
        "jobs_per_s": round(len(jobs) / seconds, 2),
        "images_per_s": round(len(jobs) * PHOTOS_PER_JOB / seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    parser.add_argument("--jobs", type=int, default=60)
    args = parser.parse_args()
    settings = load_settings()
    samples = fetch_samples(settings.samples_dir.expanduser(), settings.models.wheelhouse)
    jobs = people(samples.orl, args.jobs)
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        latency = [submit_latency(f, scratch, jobs[0][1]) for f in ("always", "everysec")]
        milvus = MilvusServerSettings(
            data_dir=scratch / "milvus", port=free_port(), metrics_port=free_port()
        )
        redis_settings = RedisServerSettings(data_dir=scratch / "redis", port=free_port())
        with MilvusServer(milvus) as mserver, RedisServer(redis_settings) as rserver:
            pipeline = FacePipeline.from_settings(settings)
            gallery = Gallery(
                GallerySettings(uri=mserver.uri), pipeline.model_id, pipeline.embedder.dimension
            )
            service = FaceService(pipeline, gallery, Thresholds(settings.matching), settings)
            service.enroll("queue-sync", "warm", jobs[0][1])
            start = time.perf_counter()
            for user, photos in jobs:
                service.enroll("queue-sync", user, photos)
            sync_s = time.perf_counter() - start
            baseline = {
                "jobs_per_s": round(len(jobs) / sync_s, 2),
                "images_per_s": round(len(jobs) * PHOTOS_PER_JOB / sync_s, 2),
            }
            queued = [through_workers(w, jobs, rserver.uri, mserver.uri) for w in (1, 2)]
    for row in queued:
        row["ratio_to_in_process"] = round(row["jobs_per_s"] / baseline["jobs_per_s"], 2)
    emit(
        {
            "redis": "redis-server (managed, AOF on)",
            "milvus": "managed Milvus standalone 2.3.5",
            "images_per_job": PHOTOS_PER_JOB,
            "submit_latency": latency,
            "in_process_enroll": baseline,
            "through_queue": queued,
        },
        args.json,
    )


if __name__ == "__main__":
    main()
