"""A real multi-node Ray cluster on one machine, under the supervisor: a head and worker
nodes, each a ``ray start --block`` process with its own raylet, object store and ports.

Tests and benchmarks use it to run the served application across nodes the way a cluster of
machines would (the deployments placed by resources, the object transfers between raylets,
a node that can be killed on its own). Custom resources stand in for node roles: a
``gpu_node`` resource that only one worker offers, and that the Embedder asks for, puts the
Embedder there as a GPU node would. What one machine cannot show: the nodes share its
cores (more nodes are not faster), and they share one address, so only the head runs Serve's
proxies (``proxy_location: HeadOnly``; a second proxy would need the same port).

Every node's environment carries `facegallery.serving.app.ray_env`, as a Kubernetes pod's
would: Serve's proxies and every worker read it from their raylet. Each node has a metrics
directory of its own (as each pod has its own filesystem) and its own exporter beside the
raylet (`MetricsExporter`; the head's with the queue and gallery gauges), so Prometheus
scrapes the nodes one by one as it would a cluster's pods."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import sys
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from facegallery.core.config import NODE_METRICS_DIR_ENV
from facegallery.servers.metrics_exporter import MetricsExporter
from facegallery.servers.supervisor import Launch, ManagedServer, free_port, session_members

OBJECT_STORE_BYTES = 128 * 1024 * 1024  # per node: the frames in flight, not a data set


@dataclass(frozen=True)
class NodeSpec:
    """One node: its logical CPUs and custom resources (a role such as ``gpu_node``)."""

    num_cpus: int
    resources: Mapping[str, float] = field(default_factory=dict)


class RayNode(ManagedServer):
    """One ``ray start --block`` process: the head (``head_address`` None) or a worker.
    Every port is its own, chosen free when the node is made, so nodes share a host."""

    name = "ray"

    def __init__(
        self,
        data_dir: Path,
        spec: NodeSpec,
        temp_dir: Path,
        env: Mapping[str, str],
        head_address: str | None = None,
        start_timeout_s: float = 120.0,
        stop_timeout_s: float = 30.0,
    ) -> None:
        super().__init__(data_dir, start_timeout_s, stop_timeout_s)
        self.spec = spec
        self.temp_dir = temp_dir
        self.env = dict(env)
        self.head_address = head_address
        roles = ["node_manager", "object_manager", "metrics", "agent_http", "agent_grpc"]
        roles += ["runtime_env_agent"] + (["gcs", "client_server"] if head_address is None else [])
        self._ports = {role: free_port() for role in roles}

    @property
    def is_head(self) -> bool:
        return self.head_address is None

    @property
    def ports(self) -> Mapping[str, int]:
        return self._ports

    @property
    def uri(self) -> str:
        """The cluster's address (the head's GCS), which workers and drivers join."""
        return self.head_address or f"127.0.0.1:{self._ports['gcs']}"

    def launch(self) -> Launch:
        p = self._ports
        command = [
            str(Path(sys.executable).with_name("ray")), "start", "--block",
            "--node-ip-address", "127.0.0.1",
            "--num-cpus", str(self.spec.num_cpus),
            "--resources", json.dumps(dict(self.spec.resources)),
            "--object-store-memory", str(OBJECT_STORE_BYTES),
            "--node-manager-port", str(p["node_manager"]),
            "--object-manager-port", str(p["object_manager"]),
            "--metrics-export-port", str(p["metrics"]),
            "--dashboard-agent-listen-port", str(p["agent_http"]),
            "--dashboard-agent-grpc-port", str(p["agent_grpc"]),
            "--runtime-env-agent-port", str(p["runtime_env_agent"]),
            # Workers on ports the kernel picks: raylets sharing a range race for its ports.
            "--min-worker-port", "0", "--max-worker-port", "0",
            "--disable-usage-stats",
        ]  # fmt: skip
        if self.is_head:
            command += [
                "--head", "--port", str(p["gcs"]),
                "--ray-client-server-port", str(p["client_server"]),
                "--include-dashboard", "false",
                "--temp-dir", str(self.temp_dir),
            ]  # fmt: skip
        else:
            command += ["--address", self.uri]
        return Launch(
            command=command, cwd=self.data_dir, env=self.env, drop_env_prefix="FACEGALLERY_"
        )

    def process_titles(self) -> list[str]:
        """The command lines of the node's processes, as Ray titles them (a Serve replica
        of the Embedder reads ``ray::ServeReplica:facegallery:Embedder``): where each replica
        runs, seen from outside Ray."""
        return [title for _, title in self.process_pids_and_titles()]

    def pids_titled(self, prefix: str) -> list[int]:
        """The node's processes whose title starts with ``prefix`` (``ray::ServeController``:
        the Serve controller, on the head)."""
        return [pid for pid, title in self.process_pids_and_titles() if title.startswith(prefix)]

    def replicas(self, deployment: str) -> int:
        """How many replicas of the application's ``deployment`` run on the node."""
        return sum(f"ServeReplica:facegallery:{deployment}" in t for t in self.process_titles())

    def process_pids_and_titles(self) -> list[tuple[int, str]]:
        """(pid, command line) of every process of the node: the raylet's workers make
        process groups of their own but stay in the node's session."""
        pid = self._owner()
        found = []
        for member in session_members(pid) if pid is not None else []:
            with contextlib.suppress(OSError):
                raw = Path(f"/proc/{member}/cmdline").read_bytes()
                found.append((member, raw.replace(b"\0", b" ").decode(errors="replace").strip()))
        return found

    def healthy(self) -> bool:
        """The node's raylet listens (a worker's has registered with the head by then)."""
        try:
            with socket.create_connection(("127.0.0.1", self._ports["node_manager"]), 1):
                return True
        except OSError:
            return False


class LocalRayCluster:
    """A head and workers on this machine, each with its exporter, started in order and
    stopped in reverse. ``config_file``: the application's settings, which the head's
    exporter reads its gauges with."""

    def __init__(
        self,
        data_dir: Path,
        head: NodeSpec,
        workers: list[NodeSpec],
        env: Mapping[str, str],
        config_file: Path,
    ) -> None:
        self.data_dir = data_dir
        # Short: Ray's socket paths under it must stay within the kernel's 107 bytes.
        self.temp_dir = Path("/tmp") / f"fgray-{free_port()}"
        names = ["head"] + [f"worker-{i}" for i in range(1, len(workers) + 1)]
        self.head = RayNode(
            data_dir / "head", head, self.temp_dir, node_env(env, data_dir / "head")
        )
        self.workers = [
            RayNode(
                data_dir / name, spec, self.temp_dir, node_env(env, data_dir / name), self.head.uri
            )
            for name, spec in zip(names[1:], workers, strict=True)
        ]
        self.exporters = {
            name: MetricsExporter(
                config_file,
                data_dir / name / "exporter",
                data_dir / name / "metrics",
                "127.0.0.1",
                free_port(),
                gauges=name == "head",
            )
            for name in names
        }

    @property
    def address(self) -> str:
        return self.head.uri

    @property
    def nodes(self) -> list[RayNode]:
        return [self.head, *self.workers]

    def exporter(self, node: RayNode) -> MetricsExporter:
        """The exporter beside ``node``."""
        return self.exporters[node.data_dir.name]

    @contextmanager
    def running(self) -> Iterator[LocalRayCluster]:
        """Every node and its exporter started (head first); on the way out each one
        stopped, in reverse, whatever another's stop raised, and Ray's session files (logs,
        sockets) removed."""
        with ExitStack() as nodes:
            nodes.callback(shutil.rmtree, self.temp_dir, ignore_errors=True)
            for node in self.nodes:
                node.start()
                nodes.callback(node.stop)
                exporter = self.exporter(node)
                exporter.start()
                nodes.callback(exporter.stop)
            yield self


def node_env(env: Mapping[str, str], node_dir: Path) -> dict[str, str]:
    """The node's environment: the application's, with the node's own metrics directory."""
    return {**env, NODE_METRICS_DIR_ENV: str(node_dir / "metrics")}
