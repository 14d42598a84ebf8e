"""One real Ray Serve application for the serving tests: local Ray, the managed Milvus server
and redis-server of the session, free ports, the gallery and queue under prefixes of its own."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from facegallery.core.config import Settings
from facegallery.servers import MilvusServer
from facegallery.servers.metrics_exporter import MetricsExporter
from facegallery.servers.redis import RedisServer
from facegallery.servers.supervisor import free_port
from facegallery.serving.keys import KeyStore

IMAGE_MAX_BYTES = 1_500_000
REQUEST_MAX_BYTES = 8 * 1024 * 1024
QUEUE_MAX_BYTES = 3_000_000  # image bytes of unfinished jobs: two 1.2 MB jobs and a bit
METRICS_REFRESH_S = 1.0


@dataclass(frozen=True)
class Served:
    settings: Settings
    overrides: dict[str, Any]
    http_url: str
    grpc_target: str
    metrics_url: str  # the node's exporter (with the gauges)
    keys: KeyStore
    admin: str  # an admin key's token
    gallery: str  # a gallery of this session's own


def served_overrides(
    base: Settings, milvus: MilvusServer, redis: RedisServer, metrics_dir: Path
) -> dict[str, Any]:
    """The app's settings: small replicas that fit two cores, quick worker polling."""
    small = {"num_cpus": 0.25}
    return {
        "models": {"dir": str(base.models.dir), "pack": base.models.pack},
        "gallery": {"uri": milvus.uri, "index_type": "FLAT"},
        "decode": {"max_bytes": IMAGE_MAX_BYTES},
        "matching": {"thresholds_file": str(base.matching.thresholds_file)},
        "queue": {
            "url": redis.settings.address,
            "prefix": "serve-" + secrets.token_hex(4),
            "block_ms": 100,
            "claim_idle_ms": 3000,
            "max_queued_bytes": QUEUE_MAX_BYTES,
            "owner_share": 0.5,
            "max_job_bytes": IMAGE_MAX_BYTES,  # within one key's share of QUEUE_MAX_BYTES
        },
        "runtime": {"intra_op_threads": 1},
        "serving": {
            "http_port": free_port(),
            "grpc_port": free_port(),
            "metrics_port": free_port(),
            "metrics_dir": str(metrics_dir),
            "gateway": {**small, "max_ongoing_requests": 64},
            "detector": {**small, "max_batch_size": 8, "batch_wait_timeout_s": 0.01},
            "embedder": {**small, "max_batch_size": 32, "batch_wait_timeout_s": 0.01},
            "workers": small,
            "watch_poll_s": 0.05,
            "max_request_bytes": REQUEST_MAX_BYTES,
            "metrics_refresh_s": METRICS_REFRESH_S,
        },
    }


@pytest.fixture(scope="session")
def served(
    settings: Settings,
    milvus_server: MilvusServer,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    import ray
    from ray import serve

    import facegallery.core.telemetry  # noqa: F401  (this process's metrics stay its own)
    from facegallery.serving.app import ray_env, run_app
    from facegallery.serving.local_ray import start_local_ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    root = tmp_path_factory.mktemp("served")
    overrides = served_overrides(settings, milvus_server, redis_server, root / "metrics")
    app_settings = Settings(**overrides)
    config = root / "settings.yaml"
    config.write_text(yaml.safe_dump(overrides))
    serving = app_settings.serving
    exporter = MetricsExporter(
        config, root / "exporter", serving.metrics_dir, "127.0.0.1", serving.metrics_port, True
    )
    with node_environment(ray_env(app_settings)):  # the raylet and its workers keep it
        start_local_ray(2, log_to_driver=False)
    try:
        run_app(app_settings, overrides)
        exporter.start()
        keys = KeyStore(app_settings.queue.url, app_settings.queue.prefix)
        _, admin = keys.create("admin", [], "tests")
        yield Served(
            app_settings,
            overrides,
            f"http://127.0.0.1:{serving.http_port}",
            f"127.0.0.1:{serving.grpc_port}",
            exporter.uri,
            keys,
            admin,
            "served",
        )
    finally:
        exporter.stop()
        serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()


@contextmanager
def node_environment(env: dict[str, str]) -> Iterator[None]:
    """``env`` in this process's environment while Ray starts (its raylet inherits it), and
    not after: the tests' other subprocesses must not write into the node's metrics."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
