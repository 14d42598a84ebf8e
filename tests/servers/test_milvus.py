"""The managed Milvus standalone server: refusals, the CLI, and durability across a clean
stop and a SIGKILL crash."""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from facegallery.cli import app
from facegallery.core.config import GallerySettings
from facegallery.core.errors import FailedPrecondition
from facegallery.gallery import Gallery, NewTemplate
from facegallery.servers import MilvusServer
from facegallery.servers.supervisor import process_alive
from tests.conftest import milvus_settings

runner = CliRunner()
DIM = 8


def _templates(users: int, per_user: int, rng: np.random.Generator) -> dict[str, list[NewTemplate]]:
    batch = {}
    for u in range(users):  # one person's photos: near copies of one face
        vectors = (rng.normal(size=DIM) + 0.2 * rng.normal(size=(per_user, DIM))).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        batch[f"user{u:03d}"] = [
            NewTemplate(f"{u:016x}{k:016x}", v, 0.8, f"u{u}-{k}.jpg") for k, v in enumerate(vectors)
        ]
    return batch


def test_second_server_on_the_same_data_or_port_is_refused(milvus_server: MilvusServer) -> None:
    same_data = MilvusServer(milvus_server.settings.model_copy(update={"port": 1}))
    with pytest.raises(FailedPrecondition, match="already runs on"):
        same_data.start()
    other = milvus_settings(milvus_server.data_dir.parent / "other")
    same_port = MilvusServer(other.model_copy(update={"port": milvus_server.settings.port}))
    with pytest.raises(FailedPrecondition, match="already in use"):
        same_port.start()
    assert milvus_server.status().healthy


@pytest.mark.slow
def test_data_survives_stop_and_sigkill(tmp_path: Path) -> None:
    server = MilvusServer(milvus_settings(tmp_path / "milvus"))
    server.start()
    try:
        settings = GallerySettings(uri=server.uri)
        batch = _templates(40, 3, np.random.default_rng(0))
        Gallery(settings, "durable-model", DIM).add_many("keep", batch)

        def check() -> None:
            reopened = Gallery(settings, "durable-model", DIM)
            stats = reopened.stats("keep")
            assert (stats.users, stats.templates) == (40, 120)
            assert reopened.users("keep", limit=3) == ["user000", "user001", "user002"]
            probe = batch["user017"][1].embedding
            assert reopened.search("keep", probe[None], 1)[0][0].user_id == "user017"

        server.stop()  # a clean stop
        server.start()
        check()
        pid = server.status().pid
        assert pid is not None
        os.killpg(pid, signal.SIGKILL)  # a crash: nothing gets to flush
        while process_alive(pid, None):
            server.status()
        server.start()  # the stale pid file does not block a restart
        check()
    finally:
        server.stop()
    assert not server.status().running


def test_cli_start_status_stop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = milvus_settings(tmp_path / "cli-milvus")
    monkeypatch.setenv("FACEGALLERY_MILVUS__DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("FACEGALLERY_MILVUS__PORT", str(settings.port))
    monkeypatch.setenv("FACEGALLERY_MILVUS__METRICS_PORT", str(settings.metrics_port))
    stopped = runner.invoke(app, ["milvus", "status"])
    assert stopped.exit_code == 1 and "stopped" in stopped.output
    started = runner.invoke(app, ["milvus", "start", "--json"])
    try:
        assert started.exit_code == 0, started.output
        assert json.loads(started.output)["uri"] == f"http://127.0.0.1:{settings.port}"
        status = runner.invoke(app, ["milvus", "status", "--json"])
        assert status.exit_code == 0 and json.loads(status.output)["healthy"] is True
        again = runner.invoke(app, ["milvus", "start"])
        assert again.exit_code == 1 and "already runs on" in again.output
        with socket.create_connection(("127.0.0.1", settings.port), timeout=2):
            pass
    finally:
        result = runner.invoke(app, ["milvus", "stop"])
    assert result.exit_code == 0 and "stopped" in result.output
    assert "was not running" in runner.invoke(app, ["milvus", "stop"]).output
