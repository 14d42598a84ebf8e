"""Starting the local Ray once more when Ray's own startup wait runs out.

Ray's raylet missing its 30 s registration window cannot be made to happen on purpose, so
``ray.init`` is replaced for the retry tests (the one fault mocked here); the processes
that a failed attempt leaves behind are real ones, and really stopped.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import ray

from facegallery.core.errors import Unavailable
from facegallery.serving import local_ray

TIMEOUT = Exception(
    "The current node timed out during startup. This could happen because some of the "
    "raylet failed to startup or the GCS has become overloaded."
)


def sleeper(*marker: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *marker])


def gone(process: subprocess.Popen[bytes], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return True
        time.sleep(0.05)
    return False


def test_ray_children_and_their_descendants_are_stopped() -> None:
    ray_like = sleeper("--session-dir=/tmp/ray/session_x")
    other = sleeper()
    # A child that starts a grandchild of its own, as the raylet starts its agents:
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time; "
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            "time.sleep(60)",
            "/x/ray/raylet",
        ],
    )
    try:
        time.sleep(0.5)  # the grandchild is started
        assert local_ray.ray_children() >= {ray_like.pid, parent.pid}
        assert other.pid not in local_ray.ray_children()
        assert local_ray.stop_processes({parent.pid}) == 2
        assert gone(parent) and ray_like.poll() is None
    finally:
        for p in (ray_like, other, parent):
            p.kill()
            p.wait()


def test_the_log_tails_name_their_files(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "raylet.out").write_text("\n".join(f"line {i}" for i in range(40)))
    text = local_ray.startup_logs(tmp_path)
    assert str(logs / "raylet.out") in text
    assert "line 39" in text and "line 10" not in text
    assert "no Ray logs" in local_ray.startup_logs(tmp_path / "missing")


class FlakyInit:
    """``ray.init`` failing with Ray's startup timeout the first ``failures`` times, each
    failure leaving a real Ray-looking child behind as Ray's does."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[dict[str, Any]] = []
        self.left: list[subprocess.Popen[bytes]] = []

    def __call__(self, **options: Any) -> None:
        self.calls.append(options)
        if len(self.calls) <= self.failures:
            self.left.append(sleeper("/x/ray/core/src/ray/raylet/raylet"))
            raise TIMEOUT


def test_a_startup_timeout_is_tried_once_more(monkeypatch: pytest.MonkeyPatch) -> None:
    init = FlakyInit(failures=1)
    monkeypatch.setattr(ray, "init", init)
    running = sleeper("/x/ray/dashboard/agent.py")  # a Ray that was there before: kept
    try:
        local_ray.start_local_ray(3, log_to_driver=False)
        assert len(init.calls) == 2
        assert init.calls[-1] == {
            "address": "local",
            "num_cpus": 3,
            "include_dashboard": False,
            "log_to_driver": False,
        }
        assert gone(init.left[0]), "the failed attempt's processes are stopped"
        assert running.poll() is None
    finally:
        running.kill()
        running.wait()


def test_two_timeouts_are_unavailable_with_the_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    init = FlakyInit(failures=2)
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(local_ray, "startup_logs", lambda: "--- raylet.out\nport in use")
    with pytest.raises(Unavailable, match="did not start 2 times") as raised:
        local_ray.start_local_ray(1)
    assert "port in use" in str(raised.value)
    assert all(gone(p) for p in init.left)


def test_other_errors_are_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def broken(**options: Any) -> None:
        calls.append(options)
        raise ValueError("num_cpus must be positive")

    monkeypatch.setattr(ray, "init", broken)
    with pytest.raises(ValueError, match="num_cpus"):
        local_ray.start_local_ray(0)
    assert len(calls) == 1
