"""The served application on a real multi-node Ray cluster on this machine: a head and two
worker nodes, each its own ``ray start`` process, raylet and object store. The Detector is
placed on the "CPU" worker and the Embedder on the "GPU" worker by custom resources, so
every identify crosses nodes (frames to one raylet, crops to another) and enrollment jobs
run through the workers against both; the replicas are where their resources say, as their
processes' places in each node's process tree show."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from facegallery.assets.samples import Samples
from facegallery.client import GrpcClient, HttpClient
from facegallery.core.config import Settings
from facegallery.servers import MilvusServer
from facegallery.servers.ray_cluster import LocalRayCluster, NodeSpec
from facegallery.servers.redis import RedisServer
from facegallery.servers.serving import ServingServer
from facegallery.serving.app import ray_env
from facegallery.serving.keys import KeyStore
from tests.serving.conftest import served_overrides

pytestmark = pytest.mark.slow

CPU_NODE, GPU_NODE = {"cpu_node": 1.0}, {"gpu_node": 1.0}


def _cluster_overrides(
    settings: Settings, milvus: MilvusServer, redis: RedisServer, metrics_dir: Path
) -> dict[str, Any]:
    overrides = served_overrides(settings, milvus, redis, metrics_dir)
    serving = overrides["serving"]
    serving["proxy_location"] = "HeadOnly"  # the nodes share this machine's ports
    serving["detector"]["resources"] = {"cpu_node": 0.5}
    serving["embedder"]["resources"] = {"gpu_node": 0.5}
    return overrides


@pytest.fixture(scope="module")
def cluster_app(
    settings: Settings,
    milvus_server: MilvusServer,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalRayCluster, Settings, str]]:
    root = tmp_path_factory.mktemp("cluster")
    overrides = _cluster_overrides(settings, milvus_server, redis_server, root / "metrics")
    app_settings = Settings(**overrides)
    cluster = LocalRayCluster(
        root / "nodes",
        head=NodeSpec(num_cpus=1),
        workers=[NodeSpec(2, CPU_NODE), NodeSpec(1, GPU_NODE)],
        env={**ray_env(app_settings), "RAY_AUTH_MODE": "disabled"},
    )
    config = root / "settings.yaml"
    config.write_text(yaml.safe_dump(overrides))
    with cluster.running():
        app = ServingServer(app_settings, config, root / "app", ray_address=cluster.address)
        with app:
            _, admin = KeyStore(app_settings.queue.url, app_settings.queue.prefix).create(
                "admin", [], "cluster"
            )
            yield cluster, app_settings, admin


def test_identify_and_enrollment_are_served_across_nodes(
    cluster_app: tuple[LocalRayCluster, Settings, str], samples: Samples
) -> None:
    cluster, settings, admin = cluster_app
    serving = settings.serving
    http = HttpClient(f"http://127.0.0.1:{serving.http_port}", admin)
    job = http.enroll("cluster", "obama", [samples.photo("obama.jpg")])
    assert http.wait_job(job.job_id).status == "done"
    grpc = GrpcClient(f"127.0.0.1:{serving.grpc_port}", admin, timeout_s=10)
    for client in (http, grpc):
        (face,) = client.identify("cluster", samples.photo("obama2.jpg")).faces
        assert face.candidates and face.candidates[0].user_id == "obama"

    head, cpu_worker, gpu_worker = cluster.nodes
    assert any("Detector" in title for title in cpu_worker.process_titles())
    assert any("Embedder" in title for title in gpu_worker.process_titles())
    for node in (head, cpu_worker):
        assert not any("Embedder" in title for title in node.process_titles())
    for node in (head, gpu_worker):
        assert not any("Detector" in title for title in node.process_titles())
