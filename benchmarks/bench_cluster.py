"""The served application on one Ray node against three, on the same machine, and a node lost
under load.

1. **One node vs three.** The same application (Gateway and enrollment workers, two Detector
   replicas, one Embedder) on a one-node `LocalRayCluster`, then on a head plus two "GPU"
   worker nodes (the Detector at most one replica per node, the Embedder on either), each a
   ``ray start`` process of its own. The nodes share this machine's cores, so three nodes
   are not faster: the difference is the cost of the extra hops (the frame to a Detector's
   raylet, its crops back to the gateway and on to the Embedder's, the embeddings back) and
   of the object transfers. Closed loops of 1 and 4 gRPC callers, 640x480 JPEG frames with
   0-3 faces; frames/s and latency percentiles; the bytes shipped between nodes per frame.
2. **A node lost under load** (three nodes): an open loop of identify calls (HTTP and gRPC,
   one attempt each with a deadline) and enrollment jobs in flight; the worker node running
   the Embedder is SIGKILLed (raylet, workers, its metrics exporter). The timeline per second
   after the kill, when the Embedder runs again on the other node, when every call is OK
   again, when the jobs are done (and whether each user holds exactly its templates); then
   the node is started again and the time until the Detector replica it lost is placed back
   on it; then the Serve controller is SIGKILLed under the same load.

    .venv/bin/python benchmarks/bench_cluster.py --json benchmarks/results/cluster.json
"""

from __future__ import annotations

import argparse
import copy
import os
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from bench_serving import drive, frames, scratch_servers
from facegallery.assets.samples import Samples, fetch_samples
from facegallery.client import GrpcClient, HttpClient
from facegallery.client.open_loop import (
    Caller,
    OpenLoop,
    identify_calls,
    per_second,
    recovered_after,
)
from facegallery.core.config import Settings, load_settings
from facegallery.servers.ray_cluster import LocalRayCluster, NodeSpec
from facegallery.servers.serving import ServingServer
from facegallery.serving.app import ray_env
from facegallery.serving.keys import KeyStore
from report import emit

GALLERY = "bench"
CROP_BYTES = 112 * 112 * 3  # one aligned face, uint8
EMBEDDING_BYTES = 128 * 4
DEADLINE_S = 5.0
STEADY_S = 5
JOB_USERS = range(30, 36)


def app_overrides(base: dict[str, Any], spread: bool) -> dict[str, Any]:
    """The application's settings: small replicas for two cores; ``spread``: the Detector at
    most one replica per node (three nodes), else anywhere (one node)."""
    gpu: dict[str, Any] = {"num_cpus": 0.25, "resources": {"gpu_node": 0.25}}
    head: dict[str, Any] = {"num_cpus": 0.25, "resources": {"head_node": 0.25}}
    overrides: dict[str, Any] = copy.deepcopy(base)
    overrides["serving"].update(
        proxy_location="HeadOnly",
        gateway={**head, "max_ongoing_requests": 64},
        workers=head,
        detector={**gpu, "num_replicas": 2, "max_replicas_per_node": 1 if spread else None},
        embedder=gpu,
        metrics_refresh_s=1.0,
    )
    overrides["runtime"] = {"intra_op_threads": 1}
    return overrides


@contextmanager
def served(
    root: Path, overrides: dict[str, Any], head: NodeSpec, workers: list[NodeSpec]
) -> Iterator[tuple[LocalRayCluster, Settings, str]]:
    """The cluster, the application deployed on it, and an admin key."""
    settings = Settings(**overrides)
    config = root / "settings.yaml"
    config.write_text(yaml.safe_dump(overrides))
    cluster = LocalRayCluster(
        root / "nodes",
        head,
        workers,
        {**ray_env(settings), "RAY_AUTH_MODE": "disabled"},
        config,
    )
    app = ServingServer(settings, config, root / "app", ray_address=cluster.address)
    started = time.monotonic()
    with cluster.running(), app:
        print(f"cluster and app up in {time.monotonic() - started:.0f} s", flush=True)
        _, token = KeyStore(settings.queue.url, settings.queue.prefix).create("admin", [])
        yield cluster, settings, token


def urls(settings: Settings) -> tuple[str, str]:
    """The app's HTTP URL and gRPC target."""
    serving = settings.serving
    return f"http://127.0.0.1:{serving.http_port}", f"127.0.0.1:{serving.grpc_port}"


def throughput(
    settings: Settings, token: str, batch: list[bytes], seconds: float
) -> list[dict[str, Any]]:
    """Closed loops of 1 and 4 gRPC callers."""
    _, target = urls(settings)
    local = threading.local()

    def call(frame: bytes) -> object:
        if not hasattr(local, "client"):
            local.client = GrpcClient(target, token, DEADLINE_S * 4)
        return local.client.identify(GALLERY, frame)

    drive(call, 2, 3.0, batch)  # warm up
    levels = []
    for callers in (1, 4):
        result = drive(call, callers, seconds, batch)
        print(result, flush=True)
        levels.append(result)
    return levels


def shipped_per_frame(settings: Settings, token: str, batch: list[bytes]) -> dict[str, float]:
    """Bytes that cross between raylets per frame when Detector and Embedder live on other
    nodes than the gateway: the frame to the Detector, each face's aligned crop back and on
    to the Embedder, its embedding back."""
    url, _ = urls(settings)
    http = HttpClient(url, token)
    faces = [len(http.identify(GALLERY, frame).faces) for frame in batch]
    frame_bytes = float(np.mean([len(f) for f in batch]))
    mean_faces = float(np.mean(faces))
    crops = 2 * mean_faces * CROP_BYTES
    return {
        "mean_faces": round(mean_faces, 2),
        "frame_bytes": round(frame_bytes),
        "crop_bytes_each_way": round(mean_faces * CROP_BYTES),
        "total_bytes": round(frame_bytes + crops + mean_faces * EMBEDDING_BYTES),
    }


def orl_png(samples: Samples, person: int, k: int) -> bytes:
    """ORL person ``person``'s photo ``k`` as PNG (the API takes JPEG/PNG/WebP)."""
    image = cv2.imread(str(samples.orl / f"s{person}" / f"{k}.pgm"))
    assert image is not None
    return bytes(cv2.imencode(".png", image)[1])


def wait(condition: Callable[[], bool], timeout_s: float) -> float | None:
    """Seconds until ``condition`` held (None: not within ``timeout_s``)."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_s:
            return None
        time.sleep(0.25)
    return time.monotonic() - start


def calls(settings: Settings, token: str, photo: bytes) -> list[Callable[[], Caller]]:
    """The open loop's identify calls, HTTP and gRPC."""
    return identify_calls(*urls(settings), token, GALLERY, photo, DEADLINE_S)


def node_loss(
    cluster: LocalRayCluster, settings: Settings, token: str, samples: Samples, rate: float
) -> dict[str, Any]:
    """Kill the Embedder's worker node under an open loop with jobs in flight; bring it back."""
    (lost,) = [n for n in cluster.workers if n.replicas("Embedder")]
    (survivor,) = [n for n in cluster.workers if n is not lost]
    url, _ = urls(settings)
    http = HttpClient(url, token)
    photo = samples.photo("obama2.jpg").read_bytes()
    out: dict[str, Any] = {"rate_per_s": rate, "deadline_s": DEADLINE_S}
    with OpenLoop(calls(settings, token, photo), rate) as load:
        time.sleep(5.0)
        jobs = {}
        for person in JOB_USERS:
            images = [orl_png(samples, person, k) for k in (1, 2)]
            user = f"loss-{person}"
            jobs[user] = http.enroll(GALLERY, user, images, idempotency_key=f"{user}-once")
        killed = time.monotonic()
        out["processes_killed"] = lost.kill() + cluster.exporter(lost).kill()
        out["embedder_running_again_s"] = wait(lambda: survivor.replicas("Embedder") == 1, 180)
        out["recovered_s"] = None
        deadline = time.monotonic() + 180
        while out["recovered_s"] is None and time.monotonic() < deadline:
            time.sleep(1.0)
            out["recovered_s"] = recovered_after(load.since(killed), killed, STEADY_S)
        after = load.since(killed)
    out["calls_after_kill"] = dict(Counter(o.code for o in after))
    out["refusals_without_retry_after"] = sum(
        o.code not in {"OK", "DEADLINE_EXCEEDED"} and not o.retry_after_s for o in after
    )
    out["slowest_call_s"] = round(max((o.seconds for o in after), default=0.0), 2)
    out["per_second_after_kill"] = per_second(after, killed)
    done = wait(lambda: all(http.get_job(j.job_id).status == "done" for j in jobs.values()), 180)
    out["jobs_done_s_after_kill"] = None if done is None else round(time.monotonic() - killed, 1)
    out["jobs_with_exactly_their_templates"] = sum(
        len({t.template_id for t in http.get_user(GALLERY, user).templates}) == 2 for user in jobs
    )
    out["jobs"] = len(jobs)
    restarted = time.monotonic()
    lost.start()
    cluster.exporter(lost).start()
    out["node_start_s"] = round(time.monotonic() - restarted, 1)
    back = wait(lambda: lost.replicas("Detector") == 1, 180)
    out["detector_back_on_node_s"] = None if back is None else round(back + out["node_start_s"], 1)
    return out


def controller_loss(
    cluster: LocalRayCluster, settings: Settings, token: str, samples: Samples, rate: float
) -> dict[str, Any]:
    """SIGKILL the Serve controller under the open loop: the data plane keeps answering."""

    def controllers() -> list[int]:
        return cluster.head.pids_titled("ray::ServeController")

    (controller,) = controllers()
    photo = samples.photo("obama2.jpg").read_bytes()
    with OpenLoop(calls(settings, token, photo), rate) as load:
        time.sleep(2.0)
        killed = time.monotonic()
        os.kill(controller, signal.SIGKILL)
        again = wait(lambda: bool(controllers()) and controller not in controllers(), 120)
        time.sleep(5.0)
        during = load.since(killed)
    return {
        "controller_back_s": again and round(again, 1),
        "calls": dict(Counter(o.code for o in during)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="Write the results here.")
    parser.add_argument("--seconds", type=float, default=20.0, help="Per load level.")
    parser.add_argument("--rate", type=float, default=3.0, help="Open loop calls per second.")
    args = parser.parse_args()

    base = load_settings()
    samples = fetch_samples(base.samples_dir.expanduser(), base.models.wheelhouse)
    batch = frames(samples)
    results: dict[str, Any] = {}
    head_role, gpu_role = {"head_node": 1.0}, {"gpu_node": 1.0}
    layouts = {
        "one_node": (NodeSpec(3, {**head_role, "gpu_node": 1.0}), []),
        "three_nodes": (NodeSpec(1, head_role), [NodeSpec(1, gpu_role), NodeSpec(1, gpu_role)]),
    }
    with scratch_servers("bench-cluster-") as (base_overrides, _):
        for layout, (head, workers) in layouts.items():
            overrides = app_overrides(base_overrides, spread=bool(workers))
            with (
                tempfile.TemporaryDirectory(prefix=f"bench-cluster-{layout}-") as scratch,
                served(Path(scratch), overrides, head, workers) as (cluster, settings, token),
            ):
                http = HttpClient(urls(settings)[0], token)
                for portrait in ("obama.jpg", "astronaut.png"):
                    http.wait_job(http.enroll(GALLERY, portrait, [samples.photo(portrait)]).job_id)
                part: dict[str, Any] = {
                    "throughput": throughput(settings, token, batch, args.seconds)
                }
                if workers:
                    part["shipped_per_frame"] = shipped_per_frame(settings, token, batch)
                    part["node_loss"] = node_loss(cluster, settings, token, samples, args.rate)
                    part["controller_loss"] = controller_loss(
                        cluster, settings, token, samples, args.rate
                    )
                results[layout] = part
    one, three = (results[k]["throughput"][0]["p50_ms"] for k in ("one_node", "three_nodes"))
    results["extra_hops_p50_ms_at_one_caller"] = round(three - one, 1)
    emit(
        {
            "benchmark": "the served app on one Ray node vs three on the same machine; a node "
            "lost under load",
            "frames": {"count": len(batch), "faces": "0, 1, 2, 3 (640x480 JPEG)"},
            "seconds_per_level": args.seconds,
            **results,
        },
        args.json,
    )


if __name__ == "__main__":
    main()
