"""A node's metrics exporter as a managed server (``facegallery serve metrics``), started and
stopped by the same supervisor as Milvus, Redis and Ray: `facegallery up` runs one beside its
local Ray, and every node of a `LocalRayCluster` one beside its raylet."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import httpx

from facegallery.core.config import NODE_METRICS_DIR_ENV
from facegallery.servers.supervisor import Launch, ManagedServer


class MetricsExporter(ManagedServer):
    """The exporter of one node: its metrics directory on one port; ``gauges`` on exactly
    one node of a cluster (`facegallery.serving.exporter`)."""

    name = "metrics"

    def __init__(
        self,
        config_file: Path,
        data_dir: Path,
        metrics_dir: Path,
        host: str,
        port: int,
        gauges: bool,
        start_timeout_s: float = 60.0,
        stop_timeout_s: float = 10.0,
    ) -> None:
        super().__init__(data_dir, start_timeout_s, stop_timeout_s)
        self.config_file = config_file
        self.metrics_dir = metrics_dir
        self.host = host
        self.port = port
        self.gauges = gauges

    @property
    def ports(self) -> Mapping[str, int]:
        return {"metrics": self.port}

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def launch(self) -> Launch:
        command = [sys.executable, "-m", "facegallery", "serve", "metrics"]
        command += ["--host", self.host, "--port", str(self.port)]
        command += ["--gauges"] if self.gauges else []
        return Launch(
            command=command,
            cwd=self.data_dir,
            env={
                "FACEGALLERY_CONFIG": str(self.config_file),
                NODE_METRICS_DIR_ENV: str(self.metrics_dir),
            },
            drop_env_prefix="FACEGALLERY_",
        )

    def healthy(self) -> bool:
        try:
            return httpx.get(self.uri, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False
