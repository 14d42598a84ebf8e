"""This process's own local Ray, started once more when Ray's startup wait runs out.

``ray.init`` waits a fixed 30 s (not configurable) for its raylet to register with the GCS.
On a busy two-core machine that wait has run out (in CI every serving test then failed at
setup), and the processes the failed attempt started are left running. So: stop what that
attempt started (this process's Ray descendants), and try once more; when that fails too,
the error carries the ends of the raylet's and agents' logs, which say why.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

from facegallery.core.errors import Unavailable

logger = logging.getLogger(__name__)

ATTEMPTS = 2
STARTUP_TIMEOUT = "timed out during startup"  # Ray raises a bare Exception with this text
LOG_FILES = ("raylet.out", "raylet.err", "dashboard_agent.log", "runtime_env_agent.log")
LOG_TAIL_LINES = 15


def start_local_ray(num_cpus: int, **options: Any) -> None:
    """``ray.init(address="local")`` with up to ``ATTEMPTS`` tries of Ray's startup wait."""
    import ray

    for attempt in range(1, ATTEMPTS + 1):
        before = ray_children()
        try:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **options)
            return
        except Exception as error:
            if STARTUP_TIMEOUT not in str(error):
                raise
            logs = startup_logs()
            stopped = stop_processes(ray_children() - before)
            if attempt == ATTEMPTS:
                raise Unavailable(f"Ray did not start {ATTEMPTS} times: {error}\n{logs}") from error
            logger.warning(
                "Ray did not start (%s); stopped the %d processes it left, trying again.\n%s",
                error,
                stopped,
                logs,
            )


def startup_logs(session: Path | None = None) -> str:
    """The last lines of the latest Ray session's raylet and agent logs."""
    if session is None:
        from ray._common.utils import get_default_ray_temp_dir

        session = Path(get_default_ray_temp_dir()) / "session_latest"  # type: ignore[no-untyped-call]
    parts = []
    for name in LOG_FILES:
        path = session / "logs" / name
        if path.is_file():
            lines = path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            parts.append(f"--- {path}\n" + "\n".join(lines))
    return "\n".join(parts) or f"(no Ray logs under {session})"


def ray_children() -> set[int]:
    """This process's children that run Ray's code: what ``ray.init`` starts directly (GCS,
    raylet, monitors, reaper); the raylet starts the agents and workers."""
    return {pid for pid, parent in _parents().items() if parent == os.getpid() and _runs_ray(pid)}


def stop_processes(roots: set[int]) -> int:
    """SIGKILL ``roots`` and all their descendants; how many."""
    children: dict[int, list[int]] = {}
    for pid, parent in _parents().items():
        children.setdefault(parent, []).append(pid)
    stack, stopped = list(roots), 0
    while stack:
        pid = stack.pop()
        stack += children.get(pid, [])
        try:
            os.kill(pid, signal.SIGKILL)
            stopped += 1
        except ProcessLookupError:
            pass
    return stopped


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process, from /proc."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    return parents


def _runs_ray(pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return b"/ray/" in command or command.startswith(b"ray::")
