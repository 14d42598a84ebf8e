"""The served application on a real multi-node Ray cluster on this machine: a head and two
"GPU" worker nodes, each its own ``ray start`` process, raylet, object store and metrics
exporter. Serve's proxy, the Gateway and the enrollment workers run on the head (a
``head_node`` resource); the Detector (two replicas, at most one per node) and the Embedder
(one) only on nodes offering ``gpu_node``, so every identify crosses nodes and enrollment
jobs run through the workers against both.

Then the cluster is hurt the way a real one is: a real Prometheus scrapes every node's
exporter and must see each node's series once; a worker node is SIGKILLed (raylet, workers,
exporter) under an open loop of identify calls with enrollment jobs in flight, and comes back;
the Serve controller is SIGKILLed and the data plane must keep answering."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from facegallery.assets.samples import Samples
from facegallery.client import GrpcClient, HttpClient, open_loop
from facegallery.client.open_loop import Caller, OpenLoop, Outcome, recovered_after
from facegallery.core.config import Settings
from facegallery.servers import MilvusServer
from facegallery.servers.ray_cluster import LocalRayCluster, NodeSpec
from facegallery.servers.redis import RedisServer
from facegallery.servers.serving import ServingServer
from facegallery.serving.app import ray_env
from facegallery.serving.keys import KeyStore
from tests.helpers import encode, read_bgr
from tests.prometheus import PrometheusServer, node_scrape_config
from tests.serving.conftest import served_overrides

pytestmark = pytest.mark.slow

HEAD_NODE, GPU_NODE = {"head_node": 1.0}, {"gpu_node": 1.0}
GALLERY = "cluster"
DEADLINE_S = 5.0
LATENESS_S = 1.0  # what a call may take past its deadline: the client's own overhead
RATE_PER_S = 3.0  # the open loop's identify calls: well within the cluster's capacity here
RECOVERY_BOUND_S = 60.0  # measured 10 s on this machine (README); the bound leaves room for CI
STEADY_S = 8  # a second counts as recovered only when this many OK seconds follow it
JOB_USERS = range(30, 36)  # ORL people enrolled while the node dies (2 photos each)
REFUSALS = {"UNAVAILABLE", "RESOURCE_EXHAUSTED"}  # sent with Retry-After


@dataclass(frozen=True)
class ClusterApp:
    cluster: LocalRayCluster
    settings: Settings
    admin: str
    http_url: str
    grpc_target: str


def _cluster_overrides(
    settings: Settings, milvus: MilvusServer, redis: RedisServer, metrics_dir: Path
) -> dict[str, Any]:
    overrides = served_overrides(settings, milvus, redis, metrics_dir)
    serving = overrides["serving"]
    serving["proxy_location"] = "HeadOnly"  # the nodes share this machine's ports
    gpu = {"resources": {"gpu_node": 0.25}}
    serving["detector"].update(gpu, num_replicas=2, max_replicas_per_node=1)
    serving["embedder"].update(gpu)
    for cpu_only in ("gateway", "workers"):  # beside the proxy, on the node that stays
        serving[cpu_only]["resources"] = {"head_node": 0.25}
    return overrides


@pytest.fixture(scope="module")
def cluster_app(
    settings: Settings,
    milvus_server: MilvusServer,
    redis_server: RedisServer,
    samples: Samples,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ClusterApp]:
    root = tmp_path_factory.mktemp("cluster")
    overrides = _cluster_overrides(settings, milvus_server, redis_server, root / "metrics")
    app_settings = Settings(**overrides)
    config = root / "settings.yaml"
    config.write_text(yaml.safe_dump(overrides))
    cluster = LocalRayCluster(
        root / "nodes",
        head=NodeSpec(1, HEAD_NODE),
        workers=[NodeSpec(1, GPU_NODE), NodeSpec(1, GPU_NODE)],
        env={**ray_env(app_settings), "RAY_AUTH_MODE": "disabled"},
        config_file=config,
    )
    app_server = ServingServer(app_settings, config, root / "app", ray_address=cluster.address)
    with cluster.running(), app_server:
        queue = app_settings.queue
        _, admin = KeyStore(queue.url, queue.prefix).create("admin", [], "cluster")
        ports = app_settings.serving
        app = ClusterApp(
            cluster,
            app_settings,
            admin,
            f"http://127.0.0.1:{ports.http_port}",
            f"127.0.0.1:{ports.grpc_port}",
        )
        http = HttpClient(app.http_url, admin)
        job = http.enroll(GALLERY, "obama", [samples.photo("obama.jpg")])
        assert http.wait_job(job.job_id).status == "done"
        yield app


def _wait(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Seconds until ``condition`` held; fails the test after ``timeout_s``."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout_s, f"{what}: not within {timeout_s:.0f} s"
        time.sleep(0.5)
    return time.monotonic() - start


def test_identify_and_enrollment_are_served_across_nodes(
    cluster_app: ClusterApp, samples: Samples
) -> None:
    http = HttpClient(cluster_app.http_url, cluster_app.admin)
    grpc = GrpcClient(cluster_app.grpc_target, cluster_app.admin, timeout_s=10)
    for client in (http, grpc):
        (face,) = client.identify(GALLERY, samples.photo("obama2.jpg")).faces
        assert face.candidates and face.candidates[0].user_id == "obama"

    head, *workers = cluster_app.cluster.nodes
    assert head.replicas("Detector") == head.replicas("Embedder") == 0
    assert [w.replicas("Detector") for w in workers] == [1, 1]  # one per node, as set
    assert sorted(w.replicas("Embedder") for w in workers) == [0, 1]
    assert head.replicas("Gateway") == 1 and head.replicas("EnrollmentWorkers") == 1


def test_prometheus_sees_each_nodes_series_once(
    cluster_app: ClusterApp, samples: Samples, tmp_path: Path
) -> None:
    cluster = cluster_app.cluster
    targets = {
        node.data_dir.name: cluster.exporter(node).uri.split("/")[2] for node in cluster.nodes
    }
    with PrometheusServer(tmp_path / "prometheus", node_scrape_config(targets)) as prometheus:
        assert isinstance(prometheus, PrometheusServer)
        prometheus.wait_for("count(up == 1)", len(targets))
        calls = 'sum(facegallery_requests_total{operation="identify"})'
        before = prometheus.value(calls) or 0.0
        http = HttpClient(cluster_app.http_url, cluster_app.admin)
        grpc = GrpcClient(cluster_app.grpc_target, cluster_app.admin, timeout_s=10)
        made = 0
        for client in (http, grpc, http, grpc, http):
            client.identify(GALLERY, samples.photo("obama2.jpg"))
            made += 1
        # Summed over the nodes, every call exactly once: not missed, not scraped twice.
        assert prometheus.wait_for(calls, before + made) == before + made

        # The embedder's node exports the embedder's batches, and only it does.
        (embedder_node,) = [n for n in cluster.workers if n.replicas("Embedder")]
        batches = prometheus.query('facegallery_batch_size_count{deployment="embedder"} > 0')
        assert {r["metric"]["node"] for r in batches} == {embedder_node.data_dir.name}
        detectors = prometheus.query('facegallery_batch_size_count{deployment="detector"} > 0')
        assert {r["metric"]["node"] for r in detectors} <= {
            w.data_dir.name for w in cluster.workers
        }
        requests = prometheus.query("facegallery_requests_total")
        assert requests and {r["metric"]["node"] for r in requests} == {"head"}

        # The queue and gallery gauges: from one node, fresh without any API call.
        for gauge in ("facegallery_queue_jobs", "facegallery_gallery_size"):
            assert {r["metric"]["node"] for r in prometheus.query(gauge)} == {"head"}
        users = prometheus.value(f'facegallery_gallery_size{{gallery="{GALLERY}",kind="users"}}')
        assert users is not None and users >= 1


def identify_calls(app: ClusterApp, photo: bytes) -> list[Callable[[], Caller]]:
    return open_loop.identify_calls(
        app.http_url, app.grpc_target, app.admin, GALLERY, photo, DEADLINE_S
    )


def assert_answered_well(outcomes: list[Outcome]) -> None:
    """Every call OK, or refused with Retry-After (UNAVAILABLE / RESOURCE_EXHAUSTED), or
    out of time: never INTERNAL, never past its deadline."""
    for o in outcomes:
        refused = o.code in REFUSALS and o.retry_after_s
        assert o.code in {"OK", "DEADLINE_EXCEEDED"} or refused, o
        assert o.seconds <= DEADLINE_S + LATENESS_S, o


def test_a_node_lost_under_load_loses_and_doubles_nothing(
    cluster_app: ClusterApp, samples: Samples
) -> None:
    cluster = cluster_app.cluster
    (lost,) = [n for n in cluster.workers if n.replicas("Embedder")]
    (survivor,) = [n for n in cluster.workers if n is not lost]
    http = HttpClient(cluster_app.http_url, cluster_app.admin)
    photo = samples.photo("obama2.jpg").read_bytes()
    with OpenLoop(identify_calls(cluster_app, photo), RATE_PER_S) as load:
        time.sleep(4.0)
        jobs = {}
        for person in JOB_USERS:
            images = [encode(read_bgr(samples.orl / f"s{person}" / f"{k}.pgm")) for k in (1, 2)]
            user = f"loss-{person}"
            jobs[user] = http.enroll(GALLERY, user, images, idempotency_key=f"{user}-once")
        killed_at = time.monotonic()
        assert lost.kill() > 0
        cluster.exporter(lost).kill()
        took = _wait(
            lambda: recovered_after(load.since(killed_at), killed_at, STEADY_S) is not None,
            RECOVERY_BOUND_S + STEADY_S,
            "goodput back after the node was lost",
        )
    after = load.since(killed_at)
    assert_answered_well(after)
    recovery = recovered_after(after, killed_at, STEADY_S)
    assert recovery is not None and recovery <= RECOVERY_BOUND_S, (recovery, took)
    assert survivor.replicas("Embedder") == 1  # restarted where there was room

    # Every acknowledged job completes, with exactly its templates: none lost, none twice.
    for user, job in jobs.items():
        assert http.wait_job(job.job_id).status == "done", user
        templates = http.get_user(GALLERY, user).templates
        assert len(templates) == 2 and len({t.template_id for t in templates}) == 2, user

    # The node comes back: the Detector replica it lost (one per node) is placed on it again.
    lost.start()
    cluster.exporter(lost).start()
    _wait(lambda: lost.replicas("Detector") == 1, 120.0, "a Detector replica back on the node")
    (face,) = http.identify(GALLERY, photo).faces
    assert face.candidates[0].user_id == "obama"


def test_the_data_plane_answers_while_the_serve_controller_is_killed(
    cluster_app: ClusterApp, samples: Samples
) -> None:
    head = cluster_app.cluster.head

    def controllers() -> list[int]:
        return head.pids_titled("ray::ServeController")

    (controller,) = controllers()
    photo = samples.photo("obama2.jpg").read_bytes()
    with OpenLoop(identify_calls(cluster_app, photo), RATE_PER_S) as load:
        time.sleep(2.0)
        killed_at = time.monotonic()
        os.kill(controller, signal.SIGKILL)
        _wait(lambda: bool(controllers()) and controller not in controllers(), 60.0, "restart")
        time.sleep(3.0)
    during = load.since(killed_at)
    assert len(during) >= 3 * RATE_PER_S
    assert all(o.code == "OK" for o in during), [o for o in during if o.code != "OK"]
