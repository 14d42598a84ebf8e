"""`facegallery up` / `down` as a user runs them: real processes (Redis, Milvus, Ray with the
served app), real clients, signals, and a look at /proc for anything left running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from facegallery.assets.samples import Samples
from facegallery.client import GrpcClient, HttpClient
from facegallery.servers.supervisor import free_port

pytestmark = pytest.mark.slow

SMALL = {  # replicas that fit the 2-core CI machine beside the test session's own servers
    f"FACEGALLERY_SERVING__{d}__NUM_CPUS": "0.25"
    for d in ("GATEWAY", "DETECTOR", "EMBEDDER", "WORKERS")
}


def stack_env(data_dir: Path, ports: dict[str, int]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEGALLERY_")}
    return {
        **env,
        **SMALL,
        "FACEGALLERY_STACK__DATA_DIR": str(data_dir),
        "FACEGALLERY_REDIS__PORT": str(ports["redis"]),
        "FACEGALLERY_MILVUS__PORT": str(ports["milvus"]),
        "FACEGALLERY_MILVUS__METRICS_PORT": str(ports["milvus_metrics"]),
        "FACEGALLERY_SERVING__HTTP_PORT": str(ports["http"]),
        "FACEGALLERY_SERVING__GRPC_PORT": str(ports["grpc"]),
        "FACEGALLERY_SERVING__METRICS_PORT": str(ports["metrics"]),
        "FACEGALLERY_SERVING__RAY_METRICS_PORT": str(ports["ray_metrics"]),
        "FACEGALLERY_QUEUE__BLOCK_MS": "100",
    }


def new_ports() -> dict[str, int]:
    names = ("redis", "milvus", "milvus_metrics", "http", "grpc", "metrics", "ray_metrics")
    return {k: free_port() for k in names}


def facegallery(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "facegallery", *args],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def sessions_alive(sessions: set[int]) -> list[str]:
    """Processes (not zombies) in any of these sessions: what a stopped stack left behind."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, session = fields[0], int(fields[3])
        if session in sessions and state != "Z":
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ")
            alive.append(f"{stat.parent.name}: {cmdline.decode(errors='replace')[:120]}")
    return alive


def server_sessions(data_dir: Path) -> set[int]:
    """The sessions of the stack's servers (each server leads a session of its own)."""
    import json

    pids = set()
    for pid_file in data_dir.rglob("*.pid"):
        pids.add(int(json.loads(pid_file.read_text())["pid"]))
    return pids


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    data_dir = tmp_path / "stack"
    env = stack_env(data_dir, new_ports())
    yield data_dir, env
    facegallery(env, "down")


def test_up_detached_down_and_up_again(
    stack: tuple[Path, dict[str, str]], samples: Samples, tmp_path: Path
) -> None:
    data_dir, env = stack
    first = facegallery(env, "up", "--detach")
    assert first.returncode == 0, first.stderr + first.stdout
    assert "healthy: redis, milvus, serving, metrics" in first.stdout
    key = (data_dir / "admin.key").read_text().strip()
    assert key in first.stdout and (data_dir / "admin.key").stat().st_mode & 0o077 == 0
    ready = GrpcClient(f"127.0.0.1:{env['FACEGALLERY_SERVING__GRPC_PORT']}", key, 2.0, 1)
    for _ in range(5):  # ready means ready: the first calls after `up` meet a 2 s deadline
        assert len(ready.identify("home", samples.photo("obama2.jpg")).faces) == 1
    http = HttpClient(f"http://127.0.0.1:{env['FACEGALLERY_SERVING__HTTP_PORT']}", key)
    job = http.enroll("home", "obama", [samples.photo("obama.jpg")])
    assert http.wait_job(job.job_id).status == "done"
    grpc = GrpcClient(f"127.0.0.1:{env['FACEGALLERY_SERVING__GRPC_PORT']}", key)
    assert grpc.identify("home", samples.photo("obama2.jpg")).faces[0].decision == "obama"
    # The node's exporter: the calls above, and the gallery's size without an API call (read
    # again at most every serving.metrics_refresh_s, 10 s: the start's health check read it).
    metrics = f"http://127.0.0.1:{env['FACEGALLERY_SERVING__METRICS_PORT']}/metrics"
    identified = 'facegallery_requests_total{code="OK",operation="identify",protocol="grpc"}'
    assert identified in httpx.get(metrics).text
    size = 'facegallery_gallery_size{gallery="home",kind="users"} 1.0'
    deadline = time.monotonic() + 15
    while size not in httpx.get(metrics).text:
        assert time.monotonic() < deadline, "the gallery gauge was not refreshed"
        time.sleep(1)

    again = facegallery(env, "up", "--detach")  # the same data directory
    assert again.returncode != 0 and "already runs" in again.stderr, again.stderr
    elsewhere = {**env, "FACEGALLERY_STACK__DATA_DIR": str(tmp_path / "other")}
    clash = facegallery(elsewhere, "up", "--detach")  # the same ports
    assert clash.returncode != 0 and "already in use" in clash.stderr, clash.stderr
    assert "nothing was running" in facegallery(elsewhere, "down").stdout
    assert http.gallery_stats("home").users == 1  # the first stack never noticed

    sessions = server_sessions(data_dir)
    assert len(sessions) == 4
    down = facegallery(env, "down")
    assert down.returncode == 0 and "metrics, serving, milvus, redis" in down.stdout, down.stdout
    assert sessions_alive(sessions) == []

    back = facegallery(env, "up", "--detach")
    assert back.returncode == 0, back.stderr
    assert key not in back.stdout and "admin.key" in back.stdout  # the key is not re-made
    assert [t.source for t in http.get_user("home", "obama").templates] == ["obama.jpg"]
    assert grpc.identify("home", samples.photo("obama2.jpg")).faces[0].decision == "obama"


def test_foreground_up_stops_everything_on_sigint(stack: tuple[Path, dict[str, str]]) -> None:
    data_dir, env = stack
    up = subprocess.Popen(
        [sys.executable, "-m", "facegallery", "up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert up.stdout is not None
    lines = []
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        line = up.stdout.readline()
        lines.append(line)
        if "Ctrl-C" in line or not line:
            break
    assert "Ctrl-C" in lines[-1], "".join(lines)
    sessions = server_sessions(data_dir)
    up.send_signal(signal.SIGINT)
    rest, _ = up.communicate(timeout=300)
    assert up.returncode == 0, rest
    assert "stopping: metrics, serving, milvus, redis" in rest
    assert sessions_alive(sessions) == []
    assert not list(data_dir.rglob("*.pid"))


def test_the_readme_demo_runs_through_the_service() -> None:
    """`facegallery demo`: its own stack on free ports, answers over gRPC and HTTP, stopped."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEGALLERY_")}
    result = facegallery({**env, **SMALL}, "demo")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "barack-obama: job done, 2 of 2 photo(s) enrolled" in out
    assert "group.jpg refused (multiple_faces)" in out
    assert "obama2.jpg (Barack Obama, another photo): barack-obama" in out
    assert "orl/s3/9.pgm (ORL person s3, another photo): orl-s3" in out
    assert "grace_hopper.jpg (Grace Hopper, never enrolled): unknown" in out
    assert "claims barack-obama: match" in out and "claims joe-biden: no match" in out
    assert "stopping: metrics, serving, milvus, redis" in out


def test_a_failed_component_stops_what_was_started(stack: tuple[Path, dict[str, str]]) -> None:
    """The served API's port is taken: Redis and Milvus had started, and are stopped again."""
    import socket

    data_dir, env = stack
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(env["FACEGALLERY_SERVING__HTTP_PORT"])))
        squatter.listen()
        failed = facegallery(env, "up", "--detach")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    (line,) = failed.stderr.strip().splitlines()
    assert line.startswith("error: cannot start serving: http port") and "in use" in line
    assert (data_dir / "redis" / "redis.log").exists()  # they had started ...
    assert (data_dir / "milvus" / "milvus.log").exists()
    assert not list(data_dir.rglob("*.pid"))  # ... and were stopped again
    assert "nothing was running" in facegallery(env, "down").stdout
