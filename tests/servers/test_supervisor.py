"""The supervisor with real processes: start, refusals, a server that dies, one that never
becomes healthy, one that ignores SIGTERM, and stale pid files."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from facegallery.core.errors import FailedPrecondition, Unavailable
from facegallery.servers.supervisor import (
    Launch,
    ManagedServer,
    free_port,
    process_alive,
    process_start_ticks,
)

# A tiny real server: listens on a port; optionally ignores SIGTERM; optionally exits at once.
_SERVER = """
import signal, socket, sys, time
if sys.argv[2] == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if sys.argv[2] == "worker-of-its-own-group":  # as Ray's workers are: a group of their own
    import subprocess
    worker = "import os, signal, time; os.setpgid(0, 0); signal.signal(signal.SIGTERM, "
    worker += "signal.SIG_IGN); print(os.getpid(), flush=True); time.sleep(600)"
    subprocess.Popen([sys.executable, "-c", worker])
if sys.argv[2] == "crash":
    print("boom: bad config", flush=True)
    sys.exit(3)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
print("listening", flush=True)
while True:
    time.sleep(1)
"""


class TinyServer(ManagedServer):
    name = "tiny"

    def __init__(self, data_dir: Path, port: int, mode: str = "normal", **timeouts: float) -> None:
        super().__init__(data_dir, timeouts.get("start", 10.0), timeouts.get("stop", 1.0))
        self.port, self.mode = port, mode

    @property
    def ports(self) -> Mapping[str, int]:
        return {"main": self.port}

    @property
    def uri(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def launch(self) -> Launch:
        return Launch([sys.executable, "-c", _SERVER, str(self.port), self.mode], self.data_dir)

    def healthy(self) -> bool:
        if self.mode == "never-healthy":
            return False
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0


def test_start_status_stop_leaves_nothing(tmp_path: Path) -> None:
    server = TinyServer(tmp_path, free_port())
    status = server.start()
    assert status.running and status.healthy and status.pid is not None
    pid = status.pid
    assert server.status().pid == pid
    assert server.stop() is True
    assert not process_alive(pid, None)
    assert not server.status().running and not server.pid_file.exists()
    assert server.stop() is False  # nothing to stop


def test_second_server_on_same_data_is_refused_and_first_keeps_running(tmp_path: Path) -> None:
    with TinyServer(tmp_path, free_port()) as first:
        with pytest.raises(FailedPrecondition, match="already runs on"):
            TinyServer(tmp_path, free_port()).start()
        assert first.status().healthy


def test_busy_port_is_refused(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(FailedPrecondition, match=f"main port {port} already in use"):
            TinyServer(tmp_path, port).start()


def test_a_server_that_dies_while_starting_is_reported_with_its_log(tmp_path: Path) -> None:
    server = TinyServer(tmp_path, free_port(), "crash")
    with pytest.raises(Unavailable, match="exited with status 3") as caught:
        server.start()
    assert "boom: bad config" in caught.value.message
    assert not server.pid_file.exists()


def test_a_server_never_healthy_is_stopped(tmp_path: Path) -> None:
    server = TinyServer(tmp_path, free_port(), "never-healthy", start=1.0)
    with pytest.raises(Unavailable, match="not healthy within"):
        server.start()
    assert not server.status().running


def test_sigterm_ignored_then_sigkill(tmp_path: Path) -> None:
    server = TinyServer(tmp_path, free_port(), "ignore-term", stop=0.5)
    pid = server.start().pid
    assert pid is not None
    assert server.stop() is True
    assert not process_alive(pid, None)


def test_a_descendant_in_a_group_of_its_own_is_stopped_too(tmp_path: Path) -> None:
    """SIGTERM to the server's group misses a worker that made its own group (and ignores
    SIGTERM); what is left of the server's session is SIGKILLed."""
    server = TinyServer(tmp_path, free_port(), "worker-of-its-own-group", stop=0.5)
    server.start()
    deadline = time.monotonic() + 10
    while not (pids := [w for w in server.log_file.read_text().split() if w.isdigit()]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    worker = int(pids[0])
    assert os.getpgid(worker) == worker and process_alive(worker, None)
    assert server.stop() is True
    assert not process_alive(worker, None)


def test_what_a_killed_server_left_running_is_stopped(tmp_path: Path) -> None:
    """A server SIGKILLed on its own (a node lost) leaves its worker running; stop ends it."""
    server = TinyServer(tmp_path, free_port(), "worker-of-its-own-group", stop=0.5)
    leader = server.start().pid
    assert leader is not None
    deadline = time.monotonic() + 10
    while not (pids := [w for w in server.log_file.read_text().split() if w.isdigit()]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(leader, signal.SIGKILL)
    server._child.wait()  # type: ignore[union-attr]  # reaped, as its parent would
    assert process_alive(int(pids[0]), None)
    assert server.stop() is True
    assert not process_alive(int(pids[0]), None)


def test_stop_from_another_supervisor_object(tmp_path: Path) -> None:
    """`facegallery milvus stop` runs in another process than start: the pid file is
    what they share."""
    port = free_port()
    pid = TinyServer(tmp_path, port).start().pid
    assert pid is not None
    assert TinyServer(tmp_path, port).stop() is True
    assert not process_alive(pid, None)


def test_stale_pid_file_is_never_signalled(tmp_path: Path) -> None:
    """A pid file naming a live process that is not the server (pid reused) is ignored."""
    server = TinyServer(tmp_path, free_port())
    ticks = process_start_ticks(os.getpid())
    assert ticks is not None
    server.pid_file.write_text(f'{{"pid": {os.getpid()}, "started": {ticks + 1}}}')
    assert not server.status().running
    assert server.stop() is False  # and we are still alive to assert it
    with server:
        assert server.status().healthy
