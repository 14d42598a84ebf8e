"""The served application as a managed server: one process (``facegallery serve run``) that
owns a local Ray (or joins a running cluster) and the Serve application on it, started,
health-checked and stopped by the same supervisor as Milvus and Redis."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import httpx

from facegallery.core.config import Settings
from facegallery.servers.supervisor import Launch, ManagedServer


class ServingServer(ManagedServer):
    """Ray + the Serve application, configured by one settings file."""

    name = "serving"

    def __init__(
        self,
        settings: Settings,
        config_file: Path,
        data_dir: Path,
        ray_address: str | None = None,
    ) -> None:
        serving = settings.serving
        super().__init__(data_dir, serving.start_timeout_s, serving.stop_timeout_s)
        self.settings = settings
        self.config_file = config_file
        self.ray_address = ray_address  # a running cluster's, or None: a local Ray of its own

    @property
    def ports(self) -> Mapping[str, int]:
        serving = self.settings.serving
        ports = {"http": serving.http_port, "grpc": serving.grpc_port}
        if self.ray_address is None:  # a local Ray of its own: its metrics agent too
            ports["ray_metrics"] = serving.ray_metrics_port
        return ports

    @property
    def uri(self) -> str:
        return f"http://{self.settings.serving.host}:{self.settings.serving.http_port}"

    def launch(self) -> Launch:
        return Launch(
            command=[sys.executable, "-m", "facegallery", "serve", "run"]
            + (["--address", self.ray_address] if self.ray_address else []),
            cwd=self.data_dir,
            # The settings file says everything; the caller's FACEGALLERY_* must not override it.
            env={"FACEGALLERY_CONFIG": str(self.config_file), "RAY_AUTH_MODE": "disabled"},
            drop_env_prefix="FACEGALLERY_",
        )

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.uri}/v1/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False
