"""`facegallery keys`, `facegallery serve config` and `facegallery serve env` through the real
CLI."""

from __future__ import annotations

import json
import secrets
import shlex
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from facegallery.cli import app
from facegallery.core.config import ServingSettings
from facegallery.core.errors import Unauthenticated
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


def test_keys_register_a_token_made_elsewhere(
    keys: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chart's admin key: a token from a Secret, registered by a hook Job on every
    install and upgrade (so again and again), read from the environment, never argv."""
    token = f"fgk_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"
    monkeypatch.setenv("FG_TOKEN", token)
    command = ["keys", "register", "--role", "admin", "--from-env", "FG_TOKEN", "--name", "helm"]
    for _ in range(2):
        made = runner.invoke(app, command)
        assert made.exit_code == 0, made.output
        assert token not in made.output
    assert keys.authenticate(token).role == "admin"
    assert [k.name for k in keys.list()] == ["helm"]
    monkeypatch.setenv("FG_TOKEN", token.rsplit("_", 1)[0] + "_" + secrets.token_urlsafe(32))
    taken = runner.invoke(app, command)
    assert taken.exit_code == 2 and "taken by another secret" in taken.output
    monkeypatch.setenv("FG_TOKEN", "fgk_abc_short")
    short = runner.invoke(app, command)
    assert short.exit_code == 2 and "32 characters" in short.output
    monkeypatch.delenv("FG_TOKEN")
    unset = runner.invoke(app, command)
    assert unset.exit_code == 2 and "FG_TOKEN is not set" in unset.output
    assert keys.authenticate(token).role == "admin"  # the refusals changed nothing
    rotated = f"fgk_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"
    monkeypatch.setenv("FG_TOKEN", rotated + "\n")  # as a Secret made from a file
    other, _ = keys.create("read", ["alpha"], "camera")
    assert runner.invoke(app, [*command, "--sole"]).exit_code == 0
    assert keys.authenticate(rotated).name == "helm"
    with pytest.raises(Unauthenticated, match="revoked"):
        keys.authenticate(token)  # the earlier key of that name is gone
    assert sorted(k.key_id for k in keys.list()) == sorted([other.key_id, rotated.split("_")[1]])


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


def test_serve_config_binds_where_the_settings_say(monkeypatch: pytest.MonkeyPatch) -> None:
    """Local by default (`facegallery up`); a cluster's settings bind every address, so other
    nodes and a load balancer reach the proxies, and place the Embedder by resource."""
    local = yaml.safe_load(runner.invoke(app, ["serve", "config"]).output)
    assert local["http_options"]["host"] == "127.0.0.1"
    assert local["proxy_location"] == "EveryNode"
    monkeypatch.setenv("FACEGALLERY_SERVING__HOST", "0.0.0.0")
    monkeypatch.setenv("FACEGALLERY_SERVING__EMBEDDER__RESOURCES", '{"gpu_node": 0.5}')
    rendered = yaml.safe_load(runner.invoke(app, ["serve", "config"]).output)
    assert rendered["http_options"]["host"] == "0.0.0.0"
    (application,) = rendered["applications"]
    embedder = next(d for d in application["deployments"] if d["name"] == "Embedder")
    assert embedder["ray_actor_options"]["resources"] == {"gpu_node": 0.5}


def test_serve_env_is_what_every_node_starts_with(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEGALLERY_SERVING__ADMISSION__HEADROOM", "0.5")
    printed = runner.invoke(app, ["serve", "env"])
    assert printed.exit_code == 0, printed.output
    exported = dict(
        shlex.split(line.removeprefix("export "))[0].split("=", 1)
        for line in printed.output.splitlines()
    )
    callback = exported["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"]
    assert callback == "facegallery.serving.proxy:middlewares"
    serving = ServingSettings.model_validate_json(exported["FACEGALLERY_PROXY_SERVING"])
    assert serving.admission.headroom == 0.5
