"""API keys on a real redis-server: created once, stored hashed, scoped, revocable."""

from __future__ import annotations

import secrets

import pytest

from facegallery.core.errors import InvalidInput, NotFound, PermissionDenied, Unauthenticated
from facegallery.servers.redis import RedisServer
from facegallery.serving.keys import KeyStore


@pytest.fixture
def keys(redis_server: RedisServer) -> KeyStore:
    return KeyStore(redis_server.settings.address, "auth-" + secrets.token_hex(4))


def test_a_key_works_only_as_created(keys: KeyStore) -> None:
    key, token = keys.create("write", ["alpha", "beta"], "camera fleet")
    found = keys.authenticate(token)
    assert found == key and found.galleries == ("alpha", "beta")
    stored = keys.redis.hget(keys.key, key.key_id)
    assert stored is not None and token.split("_")[-1].encode() not in stored  # hash only
    found.check("write", "alpha")
    found.check("read", "beta")
    with pytest.raises(PermissionDenied, match="gamma"):
        found.check("read", "gamma")
    with pytest.raises(PermissionDenied, match="'admin'"):
        found.check("admin", "alpha")
    with pytest.raises(Unauthenticated):
        keys.authenticate(token[:-1] + ("A" if token[-1] != "A" else "B"))


def test_roles(keys: KeyStore) -> None:
    _, reader = keys.create("read", ["alpha"])
    with pytest.raises(PermissionDenied, match="'write'"):
        keys.authenticate(reader).check("write", "alpha")
    _, admin = keys.create("admin", [])
    keys.authenticate(admin).check("admin", "any-gallery")
    with pytest.raises(InvalidInput, match="--gallery"):
        keys.create("read", [])
    with pytest.raises(InvalidInput, match="role"):
        keys.create("owner", ["alpha"])
    with pytest.raises(InvalidInput, match="gallery id"):
        keys.create("read", ["Not Valid"])


def test_list_and_revoke(keys: KeyStore) -> None:
    first, token = keys.create("read", ["alpha"])
    second, _ = keys.create("admin", [])
    assert [k.key_id for k in keys.list()] == [first.key_id, second.key_id]
    assert "secret_sha256" not in first.public()
    keys.revoke(first.key_id)
    with pytest.raises(Unauthenticated, match="revoked"):
        keys.authenticate(token)
    with pytest.raises(NotFound):
        keys.revoke(first.key_id)
    for bad in (None, "", "fgk_", "fgk_abc", "Bearer x"):
        with pytest.raises(Unauthenticated):
            keys.authenticate(bad)
