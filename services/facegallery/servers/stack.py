"""`facegallery up`: the whole stack on one machine, under one data directory.

Redis (queue and API keys, AOF), the managed Milvus server (gallery), the served
application (local Ray with the Serve app: HTTP and gRPC, enrollment workers) and the node's
metrics exporter (with the queue and gallery gauges: this node is the whole cluster) are four
managed servers of the one supervisor pattern, started in that order and stopped in the
reverse one. Their data, the thresholds, the settings file they all read and the first API key
live under ``stack.data_dir``, so a second `up` finds everything the first one left.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from facegallery.core.config import Settings
from facegallery.core.errors import FaceGalleryError
from facegallery.servers import MilvusServer
from facegallery.servers.metrics_exporter import MetricsExporter
from facegallery.servers.redis import RedisServer
from facegallery.servers.serving import ServingServer
from facegallery.servers.supervisor import ManagedServer, ServerStatus
from facegallery.serving.keys import KeyStore

KEY_FILE = "admin.key"
CONFIG_FILE = "stack.yaml"


@dataclass(frozen=True)
class StackInfo:
    """What `up` tells its user."""

    data_dir: Path
    http_url: str
    grpc_target: str
    metrics_url: str
    key_file: Path
    new_key: str | None  # the admin key, when this `up` created it
    statuses: list[ServerStatus]


class Stack:
    """Start, stop and report the one-machine stack."""

    def __init__(self, settings: Settings) -> None:
        self.data_dir = settings.stack.data_dir.expanduser().resolve()
        self.settings = rebased(settings, self.data_dir)
        self.config_file = self.data_dir / CONFIG_FILE
        serving = self.settings.serving
        self.exporter = MetricsExporter(
            self.config_file,
            self.data_dir / "metrics",
            serving.metrics_dir,
            serving.host,
            serving.metrics_port,
            gauges=True,
        )
        self.servers: list[ManagedServer] = [
            RedisServer(self.settings.redis),
            MilvusServer(self.settings.milvus),
            ServingServer(self.settings, self.config_file, self.data_dir / "serving"),
            self.exporter,
        ]

    def up(self) -> StackInfo:
        """Start every server (each healthy before the next); on any failure stop the ones
        this call started and re-raise."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        started: list[ManagedServer] = []
        try:
            for server in self.servers:
                server.start()
                started.append(server)
            new_key = self._first_key()
        except BaseException:
            for server in reversed(started):
                server.stop()
            raise
        serving = self.settings.serving
        return StackInfo(
            self.data_dir,
            f"http://{serving.host}:{serving.http_port}",
            f"{serving.host}:{serving.grpc_port}",
            self.exporter.uri,
            self.data_dir / KEY_FILE,
            new_key,
            self.status(),
        )

    def down(self) -> list[str]:
        """Stop every server that runs, last started first; the names of those stopped."""
        stopped, failures = [], []
        for server in reversed(self.servers):
            try:
                if server.stop():
                    stopped.append(server.name)
            except FaceGalleryError as exc:  # keep stopping the others
                failures.append(exc)
        if failures:
            raise failures[0]
        return stopped

    def status(self) -> list[ServerStatus]:
        return [server.status() for server in self.servers]

    def _write_config(self) -> None:
        """The settings every server reads (``FACEGALLERY_CONFIG``), defaults left out."""
        self.config_file.write_text(yaml.safe_dump(self.settings.overrides(), sort_keys=True))

    def _first_key(self) -> str | None:
        """On the first `up`, an admin key, kept in the data directory (mode 600)."""
        key_file = self.data_dir / KEY_FILE
        if key_file.exists():
            return None
        queue = self.settings.queue
        _, token = KeyStore(queue.url, queue.prefix).create("admin", [], "facegallery up")
        key_file.touch(mode=0o600)  # private before the secret is in it
        key_file.write_text(token + "\n")
        return token


def rebased(settings: Settings, data_dir: Path) -> Settings:
    """The settings with every piece of state under ``data_dir`` and the clients pointed at
    the stack's own servers."""
    s = settings.model_copy(deep=True)
    s.redis.data_dir = data_dir / "redis"
    s.milvus.data_dir = data_dir / "milvus"
    s.matching.thresholds_file = data_dir / "thresholds.json"
    s.serving.metrics_dir = data_dir / "serving" / "metrics"
    s.stack.data_dir = data_dir
    s.queue.url = s.redis.address
    s.queue.appendfsync = s.redis.appendfsync  # the durability the stack's Redis is run with
    s.gallery.uri = s.milvus.address
    return s
