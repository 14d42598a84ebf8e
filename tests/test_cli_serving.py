"""`facegallery keys` and `facegallery serve config` through the real CLI."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from facegallery.cli import app
from facegallery.servers.redis import RedisServer
from facegallery.serving.keys import KeyStore

runner = CliRunner()


@pytest.fixture
def keys(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> KeyStore:
    prefix = "cli-" + secrets.token_hex(4)
    monkeypatch.setenv("FACEGALLERY_QUEUE__URL", redis_server.settings.address)
    monkeypatch.setenv("FACEGALLERY_QUEUE__PREFIX", prefix)
    return KeyStore(redis_server.settings.address, prefix)


def test_keys_create_list_revoke(keys: KeyStore) -> None:
    made = runner.invoke(app, ["keys", "create", "--role", "write", "-g", "front-door"])
    assert made.exit_code == 0, made.output
    token = made.output.strip().splitlines()[-1]
    key = keys.authenticate(token)
    assert (key.role, key.galleries) == ("write", ("front-door",))
    listed = json.loads(runner.invoke(app, ["keys", "list", "--json"]).output)
    assert [k["key_id"] for k in listed] == [key.key_id] and token not in json.dumps(listed)
    assert runner.invoke(app, ["keys", "revoke", key.key_id]).exit_code == 0
    assert runner.invoke(app, ["keys", "list", "--json"]).output.strip() == "[]"
    refused = runner.invoke(app, ["keys", "create", "--role", "read"])
    assert refused.exit_code == 2 and "--gallery" in refused.output


def test_one_settings_file_reaches_the_same_redis_from_every_command(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that says where the managed Redis runs (as `facegallery up` would start it)
    is enough for `keys create`: the queue's URL follows the server's port."""
    monkeypatch.delenv("FACEGALLERY_QUEUE__URL", raising=False)
    prefix = "file-" + secrets.token_hex(4)
    config = tmp_path / "site.yaml"
    config.write_text(f"redis:\n  port: {redis_server.settings.port}\nqueue:\n  prefix: {prefix}\n")
    made = runner.invoke(app, ["keys", "create", "--role", "admin", "--config", str(config)])
    assert made.exit_code == 0, made.output
    token = made.output.strip().splitlines()[-1]
    assert KeyStore(redis_server.settings.address, prefix).authenticate(token).role == "admin"


def test_serve_config_renders_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEGALLERY_SERVING__EMBEDDER__MAX_BATCH_SIZE", "64")
    monkeypatch.setenv("FACEGALLERY_RUNTIME__MAX_BATCH", "64")  # a runtime built for it
    out = tmp_path / "serve.yaml"
    assert runner.invoke(app, ["serve", "config", "--out", str(out)]).exit_code == 0
    rendered = yaml.safe_load(out.read_text())
    args = rendered["applications"][0]["args"]["settings"]
    assert args["serving"]["embedder"]["max_batch_size"] == 64
