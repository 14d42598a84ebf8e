"""One supervisor pattern for every server the project starts itself (Milvus, Redis, ...).

A managed server is a child process in a session of its own, with a pid file in its data
directory. The pid file is what lets ``start`` in one process and ``stop`` in another (the
CLI, ``facegallery up``, a test fixture) agree on who owns a data directory: a second server on
the same data is refused (two Milvus servers on one data directory broke the first), and so is
a port that something else already holds (Milvus's own wrapper silently picked another one).

The pid file records the process's start time as well as its pid, so a pid the kernel has
since given to another process is never mistaken for the server, and never signalled.
Stopping sends SIGTERM to the server's process group, waits, then SIGKILLs what is left of
its session (descendants that made groups of their own, as Ray's workers do, included):
servers that ignore SIGTERM (Milvus 2.3 does) are still stopped, and nothing survives.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from facegallery.core.errors import FailedPrecondition, Unavailable

_POLL_S = 0.1
_LOG_TAIL_LINES = 15
_CRASHED_PORTS_GRACE_S = 10.0


@dataclass(frozen=True)
class Launch:
    """How to run a server: the command, its working directory and extra environment."""

    command: list[str]
    cwd: Path
    env: Mapping[str, str] = field(default_factory=dict)
    drop_env_prefix: str | None = None  # inherited variables with this prefix are left out


@dataclass(frozen=True)
class ServerStatus:
    """What ``status`` reports: whether the server runs (per its pid file) and answers."""

    name: str
    running: bool
    healthy: bool
    pid: int | None
    ports: Mapping[str, int]
    data_dir: Path
    log: Path

    def describe(self) -> str:
        """One line for people."""
        ports = ", ".join(f"{k} {v}" for k, v in self.ports.items())
        if not self.running:
            return f"{self.name}: stopped (data {self.data_dir}; ports {ports})"
        state = "healthy" if self.healthy else "running, not answering its health check"
        return f"{self.name}: {state}, pid {self.pid}, ports {ports}, data {self.data_dir}"

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "running": self.running,
            "healthy": self.healthy,
            "pid": self.pid,
            "ports": dict(self.ports),
            "data_dir": str(self.data_dir),
            "log": str(self.log),
        }


class ManagedServer(ABC):
    """A server process owned by a data directory: start, wait healthy, stop, status."""

    name: str = "server"

    def __init__(self, data_dir: Path, start_timeout_s: float, stop_timeout_s: float) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._child: subprocess.Popen[bytes] | None = None

    @property
    @abstractmethod
    def ports(self) -> Mapping[str, int]:
        """The ports the server listens on, by role; each must be free before it starts."""

    @property
    @abstractmethod
    def uri(self) -> str:
        """Where clients connect."""

    @abstractmethod
    def launch(self) -> Launch:
        """Prepare the data directory (configuration, binaries) and say how to run."""

    @abstractmethod
    def healthy(self) -> bool:
        """Whether the server answers its own health check now (quickly, never raising)."""

    @property
    def pid_file(self) -> Path:
        return self.data_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / f"{self.name}.log"

    def start(self) -> ServerStatus:
        """Start the server and return once it is healthy. Refuses (FailedPrecondition) when
        a server already owns the data directory or a port is taken; a server that dies or
        does not become healthy in time is stopped and reported with its last log lines."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        owner = self._owner()
        if owner is not None:
            raise FailedPrecondition(
                f"{self.name} already runs on {self.data_dir} (pid {owner}); stop it first "
                f"(`facegallery {self.name} stop`) or use another data directory"
            )
        if self._read_pid_file() is not None:
            # The previous owner died without stopping (a crash, SIGKILL). A killed
            # multi-threaded process is a zombie while its last threads still hold its
            # sockets: give its ports a moment before calling them taken.
            self._wait_ports_free(_CRASHED_PORTS_GRACE_S)
            self._forget()
        busy = {role: port for role, port in self.ports.items() if not port_is_free(port)}
        if busy:
            listed = ", ".join(f"{role} port {port}" for role, port in busy.items())
            raise FailedPrecondition(
                f"cannot start {self.name}: {listed} already in use by another program; "
                "stop it or configure other ports"
            )
        launch = self.launch()
        with self.log_file.open("ab") as log:
            child = subprocess.Popen(
                launch.command,
                cwd=launch.cwd,
                env={**_inherited_env(launch.drop_env_prefix), **launch.env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop reaches every child
            )
        self._child = child
        self._write_pid_file(child.pid)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if child.poll() is not None:
                self._kill_session(child.pid)  # what it started before it died
                self._forget()
                raise Unavailable(
                    f"{self.name} exited with status {child.returncode} while starting; "
                    f"last lines of {self.log_file}:\n{self._log_tail()}"
                )
            if self.healthy():
                return self.status()
            time.sleep(_POLL_S)
        self.stop()
        raise Unavailable(
            f"{self.name} was not healthy within {self.start_timeout_s:.0f} s and was stopped; "
            f"last lines of {self.log_file}:\n{self._log_tail()}"
        )

    def stop(self) -> bool:
        """Stop the server that owns the data directory; False when none was running."""
        record = self._read_pid_file()
        if record is None:
            return False
        pid, started = record
        if not process_alive(pid, started):
            # Dead (or a zombie), but what it started may live on (a killed `ray start`'s
            # raylet and workers); its session id stays reserved while they do. A pid the
            # kernel gave to another process is left alone.
            left = self._kill_session(pid) if process_start_ticks(pid) in (None, started) else 0
            if left and not self._wait_gone(pid, started, 30.0):
                raise Unavailable(f"what {self.name} (pid {pid}) left running survived SIGKILL")
            self._forget()
            return left > 0
        self._signal_group(pid, signal.SIGTERM)
        if not self._wait_gone(pid, started, self.stop_timeout_s):
            self._kill_session(pid)
            if not self._wait_gone(pid, started, 30.0):
                raise Unavailable(f"{self.name} (pid {pid}) survived SIGKILL")
        self._forget()
        return True

    def kill(self) -> int:
        """SIGKILL every process of the server's session at once, as a crash or a lost
        machine would (no shutdown, nothing flushed), and wait until they are gone; the pid
        file stays behind as it would then, and the next `start` or `stop` finds it dead.
        How many processes there were (0: none ran)."""
        record = self._read_pid_file()
        if record is None or not process_alive(*record):
            return 0
        pid, started = record
        count = len(session_members(pid))
        self._kill_session(pid)
        if not self._wait_gone(pid, started, 30.0):
            raise Unavailable(f"{self.name} (pid {pid}) survived SIGKILL")
        return count

    def status(self) -> ServerStatus:
        owner = self._owner()
        return ServerStatus(
            name=self.name,
            running=owner is not None,
            healthy=owner is not None and self.healthy(),
            pid=owner,
            ports=dict(self.ports),
            data_dir=self.data_dir,
            log=self.log_file,
        )

    def __enter__(self) -> ManagedServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _owner(self) -> int | None:
        """The pid of the live server owning the data directory, if any."""
        record = self._read_pid_file()
        if record is None:
            return None
        pid, started = record
        return pid if process_alive(pid, started) else None

    def _write_pid_file(self, pid: int) -> None:
        record = {"pid": pid, "started": process_start_ticks(pid), "ports": dict(self.ports)}
        tmp = self.pid_file.with_suffix(".pid.part")
        tmp.write_text(json.dumps(record))
        tmp.replace(self.pid_file)

    def _read_pid_file(self) -> tuple[int, int | None] | None:
        try:
            record = json.loads(self.pid_file.read_text())
            return int(record["pid"]), record.get("started")
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _forget(self) -> None:
        """Reap our own child (no zombie left behind) and remove the pid file."""
        if self._child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._child.wait(timeout=5)
            self._child = None
        self.pid_file.unlink(missing_ok=True)

    def _signal_group(self, pid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)

    def _kill_session(self, pid: int) -> int:
        """SIGKILL every process of the server's session: its process group, and the
        descendants that made groups of their own (Ray's workers do); how many were left."""
        self._signal_group(pid, signal.SIGKILL)
        members = session_members(pid)
        for member in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(member, signal.SIGKILL)
        return len(members)

    def _wait_gone(self, pid: int, started: int | None, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._child is not None and self._child.pid == pid:
                self._child.poll()  # reap, so our own child does not linger as a zombie
            if not process_alive(pid, started) and not session_members(pid):
                return True
            time.sleep(_POLL_S)
        return False

    def _wait_ports_free(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(port_is_free(p) for p in self.ports.values()):
                return
            time.sleep(_POLL_S)

    def _log_tail(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-_LOG_TAIL_LINES:])


def _inherited_env(drop_prefix: str | None) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not (drop_prefix and k.startswith(drop_prefix))}


def port_is_free(port: int) -> bool:
    """Whether nothing listens on ``port`` (any address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now (the kernel's choice), and never one this process was
    given before: a caller choosing twenty ports for one cluster gets twenty."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def process_start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the fields after it are plain.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])


def process_alive(pid: int, started: int | None) -> bool:
    """Whether ``pid`` is a live (non-zombie) process that started at ``started``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in {"Z", "X"}:
        return False
    return started is None or int(fields[19]) == started


def session_members(sid: int) -> list[int]:
    """The live (non-zombie) processes of session ``sid``: a server started in a session of
    its own, and every descendant that did not start one itself, whatever its group."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] not in {"Z", "X"}:
            members.append(int(entry.name))
    return members
