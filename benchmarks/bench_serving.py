"""The served API under a camera fleet's load: many concurrent callers sending frames with 0-3
faces over gRPC, and the same over HTTP, against the running Ray Serve app (local Ray, the
managed Milvus server, redis-server). Reports throughput, p50/p95/p99 per protocol and load,
the batch sizes the Detector and Embedder reached, and, in the same run, the same frames
through the in-process ``FaceService`` (no Ray) on the same gallery: the ratio is the serving
overhead. Also: enrollment jobs/s through the API, and the Embedder's faces/s batched against
its batch-1 rate.

    .venv/bin/python benchmarks/bench_serving.py --json benchmarks/results/serving.json
    .venv/bin/python benchmarks/bench_serving.py --batch-wait-ms 5,5 \
        --json benchmarks/results/serving-wait5ms.json
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from prometheus_client import CollectorRegistry, generate_latest, multiprocess

from facegallery.assets.samples import Samples, fetch_samples
from facegallery.client import GrpcClient, HttpClient
from facegallery.core.config import (
    MilvusServerSettings,
    RedisServerSettings,
    Settings,
    load_settings,
)
from facegallery.servers import MilvusServer
from facegallery.servers.redis import RedisServer
from facegallery.servers.supervisor import free_port
from facegallery.service.face_service import FaceService
from facegallery.serving.keys import KeyStore
from facegallery.vision.pipeline import FacePipeline
from report import emit

GALLERY = "fleet"
PORTRAITS = ["obama2.jpg", "grace_hopper.jpg", "biden.jpg", "astronaut.png", "obama.jpg"]


def read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(path)
    return image


def frames(samples: Samples) -> list[bytes]:
    """640x480 JPEG frames: 0, 1, 2 and 3 faces (portraits side by side)."""
    portraits = [read(samples.photo(p)) for p in PORTRAITS]
    rng = np.random.default_rng(0)
    empty = cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), (31, 31), 0)
    made = [empty]
    for count in (1, 2, 3):
        for start in range(len(portraits)):
            chosen = [portraits[(start + k) % len(portraits)] for k in range(count)]
            width = 640 // count
            tiles = [cv2.resize(p, (width, 480)) for p in chosen]
            made.append(cv2.hconcat(tiles))
    return [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes() for f in made]


def drive(
    call: Callable[[bytes], object], clients: int, seconds: float, batch: list[bytes]
) -> dict[str, Any]:
    """``clients`` callers, each sending the frames round robin for ``seconds``."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    deadline = time.perf_counter() + seconds

    def caller(index: int) -> None:
        k = index
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                call(batch[k % len(batch)])
                latencies[index].append(time.perf_counter() - start)
            except Exception:
                errors[index] += 1
            k += 1

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(clients)]
    begin = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - begin
    done = np.array([x for per in latencies for x in per]) * 1000
    return {
        "clients": clients,
        "frames": len(done),
        "errors": sum(errors),
        "frames_per_s": round(len(done) / wall, 2),
        "p50_ms": round(float(np.percentile(done, 50)), 1),
        "p95_ms": round(float(np.percentile(done, 95)), 1),
        "p99_ms": round(float(np.percentile(done, 99)), 1),
    }


def scrape(metrics_dir: Path) -> dict[str, float]:
    """Batch and embed-stage sums and counts from the node's metrics directory (what its
    exporter would serve)."""
    node = CollectorRegistry()
    multiprocess.MultiProcessCollector(node, path=str(metrics_dir))  # type: ignore[no-untyped-call]
    wanted = {}
    for line in generate_latest(node).decode().splitlines():
        m = re.fullmatch(
            r'(facegallery_batch_size_(?:sum|count))\{deployment="(\w+)"\} (\S+)', line
        ) or re.fullmatch(
            r'(facegallery_stage_seconds_(?:sum|count))\{stage="(embed)"\} (\S+)', line
        )
        if m:
            wanted[f"{m.group(1)}:{m.group(2)}"] = float(m.group(3))
    return wanted


def batching(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, Any]:
    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    out = {}
    for deployment in ("detector", "embedder"):
        calls = delta(f"facegallery_batch_size_count:{deployment}")
        items = delta(f"facegallery_batch_size_sum:{deployment}")
        out[f"{deployment}_mean_batch"] = round(items / calls, 2) if calls else 0.0
        out[f"{deployment}_batches"] = int(calls)
    faces, compute = (
        delta("facegallery_batch_size_sum:embedder"),
        delta("facegallery_stage_seconds_sum:embed"),
    )
    out["embedder_faces_per_s_wall"] = round(faces / seconds, 1)
    out["embedder_faces_per_s_compute"] = round(faces / compute, 1) if compute else 0.0
    return out


@contextmanager
def scratch_servers(prefix: str) -> Iterator[tuple[dict[str, Any], str]]:
    """A managed Milvus server and redis-server on free ports in a scratch folder, for the
    length of a benchmark: the app's settings overrides that point at them (and free ports
    for its proxies), and the Redis URL."""
    scratch = Path(tempfile.mkdtemp(prefix=prefix))
    milvus = MilvusServerSettings(
        data_dir=scratch / "milvus", port=free_port(), metrics_port=free_port()
    )
    redis = RedisServerSettings(data_dir=scratch / "redis", port=free_port())
    with MilvusServer(milvus) as mserver, RedisServer(redis) as rserver:
        yield (
            {
                "gallery": {"uri": mserver.uri},
                "queue": {"url": rserver.uri, "block_ms": 100},
                "serving": {
                    "http_port": free_port(),
                    "grpc_port": free_port(),
                    "metrics_dir": str(scratch / "metrics"),
                },
            },
            rserver.uri,
        )


def in_process(
    settings: Settings, batch: list[bytes], seconds: float, threads: int
) -> dict[str, Any]:
    """The same frames through FaceService (FacePipeline + the same gallery), no Ray."""
    service = FaceService.from_settings(settings)
    service.identify(GALLERY, batch[1])  # warm up
    result = drive(lambda f: service.identify(GALLERY, f), threads, seconds, batch)
    crops = (
        np.zeros((1, 112, 112, 3), np.uint8) + np.arange(112, dtype=np.uint8)[None, :, None, None]
    )
    assert isinstance(service.pipeline, FacePipeline)
    start, n = time.perf_counter(), 60
    for _ in range(n):
        service.pipeline.embedder.embed(crops)
    result["embed_batch1_faces_per_s"] = round(n / (time.perf_counter() - start), 1)
    return result


def enroll_through_api(client: HttpClient, orl: Path, people: int) -> dict[str, Any]:
    """``people`` ORL people, two photos each, one job per person, 8 callers at once."""

    def job(person: int) -> str:
        images = [orl / f"s{person}" / f"{k}.pgm" for k in (1, 2)]
        encoded = [(p.name, cv2.imencode(".jpg", read(p))[1].tobytes()) for p in images]
        return client.enroll(GALLERY, f"orl-s{person}", encoded).job_id

    start = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(job, range(1, people + 1)))
    submitted = time.perf_counter() - start
    finished = [client.wait_job(i) for i in ids]
    wall = time.perf_counter() - start
    return {
        "jobs": people,
        "images_per_job": 2,
        "submit_s": round(submitted, 2),
        "jobs_per_s": round(people / wall, 2),
        "done": sum(j.status == "done" for j in finished),
    }


def load_levels(
    url: str,
    target: str,
    token: str,
    batch: list[bytes],
    levels: list[int],
    seconds: float,
    metrics_dir: Path,
) -> dict[str, list[dict[str, Any]]]:
    """Each protocol at each number of callers, one client per caller thread."""
    served: dict[str, list[dict[str, Any]]] = {"grpc": [], "http": []}
    local = threading.local()

    def over(protocol: str) -> Callable[[bytes], object]:
        def call(frame: bytes) -> object:
            if not hasattr(local, protocol):
                made = GrpcClient(target, token) if protocol == "grpc" else HttpClient(url, token)
                setattr(local, protocol, made)
            return getattr(local, protocol).identify(GALLERY, frame)

        return call

    for protocol in ("grpc", "http"):
        drive(over(protocol), 4, 3.0, batch)  # warm up
        for clients in levels:
            before = scrape(metrics_dir)
            result = drive(over(protocol), clients, seconds, batch)
            result.update(batching(before, scrape(metrics_dir), seconds))
            served[protocol].append(result)
            print(protocol, result, flush=True)
    return served


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="Write the results here.")
    parser.add_argument("--seconds", type=float, default=20.0, help="Per load level.")
    parser.add_argument("--clients", default="1,4,16,32", help="Concurrent callers per level.")
    parser.add_argument(
        "--batch-wait-ms",
        help="DETECTOR,EMBEDDER batch waits to run with instead of the settings' (e.g. 5,5).",
    )
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]

    import ray
    from ray import serve

    from facegallery.serving.app import ray_env, run_app

    base = load_settings()
    samples = fetch_samples(base.samples_dir.expanduser(), base.models.wheelhouse)
    batch = frames(samples)
    with scratch_servers("bench-serving-") as (overrides, redis_url):
        if args.batch_wait_ms:
            detector_ms, embedder_ms = (float(v) for v in args.batch_wait_ms.split(","))
            overrides["serving"]["detector"] = {"batch_wait_timeout_s": detector_ms / 1000}
            overrides["serving"]["embedder"] = {"batch_wait_timeout_s": embedder_ms / 1000}
        settings = Settings(**overrides)
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        os.environ.update(ray_env(settings))  # the raylet's: the node's metrics directory
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
        try:
            run_app(settings, overrides)
            _, token = KeyStore(redis_url, settings.queue.prefix).create("admin", [])
            url = f"http://127.0.0.1:{settings.serving.http_port}"
            target = f"127.0.0.1:{settings.serving.grpc_port}"
            http = HttpClient(url, token)
            enrollment = enroll_through_api(http, samples.orl, 40)
            for portrait in ("obama.jpg", "astronaut.png"):
                http.wait_job(http.enroll(GALLERY, portrait, [samples.photo(portrait)]).job_id)
            served = load_levels(
                url, target, token, batch, levels, args.seconds, settings.serving.metrics_dir
            )
        finally:
            serve.shutdown()  # type: ignore[no-untyped-call]
            ray.shutdown()
        # The baseline runs after Ray is gone: it gets the whole machine, as served does.
        baseline = {
            f"{t}_thread{'s' if t > 1 else ''}": in_process(settings, batch, args.seconds, t)
            for t in (1, 2)
        }
    best = max(b["frames_per_s"] for b in baseline.values())
    saturated = {p: max(r["frames_per_s"] for r in runs) for p, runs in served.items()}
    emit(
        {
            "benchmark": "served identify under load vs in-process",
            "frames": {"count": len(batch), "faces": "0, 1, 2, 3 (640x480 JPEG)"},
            "seconds_per_level": args.seconds,
            "batch_wait_s": {
                "detector": settings.serving.detector.batch_wait_timeout_s,
                "embedder": settings.serving.embedder.batch_wait_timeout_s,
            },
            "in_process": baseline,
            "served": served,
            "saturation": {
                p: {"frames_per_s": v, "vs_in_process": round(v / best, 3)}
                for p, v in saturated.items()
            },
            "enrollment_through_api": enrollment,
        },
        args.json,
    )


if __name__ == "__main__":
    main()
