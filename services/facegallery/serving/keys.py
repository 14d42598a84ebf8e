"""API keys and their gallery scopes.

A key is ``fgk_<key id>_<secret>``. Only the SHA-256 of the secret is stored (the secret is
printed once, at creation), in a Redis hash beside the enrollment queue, so every gateway
replica sees a new or revoked key on its next request. Secrets are 32 random bytes, so a fast
hash is enough (there is nothing to brute-force), and the comparison is constant-time.

Roles: ``read`` (detect, identify, verify, list and get users, stats, jobs), ``write`` (also
enroll and delete), ``admin`` (write, on every gallery). Read and write keys name their
galleries.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

import redis

from facegallery.core import ids
from facegallery.core.errors import (
    InvalidInput,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    redacted,
)

Role = Literal["read", "write", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)
_TOKEN_PREFIX = "fgk_"


@dataclass(frozen=True)
class ApiKey:
    """A key as stored (its secret's hash, never the secret)."""

    key_id: str
    role: Role
    galleries: tuple[str, ...]
    created_at: float
    secret_sha256: str
    name: str = ""

    def check(self, needed: Role, gallery: str | None) -> None:
        """Refuse (PermissionDenied) unless this key has ``needed`` on ``gallery``
        (``None``: an operation on no gallery, e.g. detect)."""
        if ROLES.index(self.role) < ROLES.index(needed):
            raise PermissionDenied(
                f"this API key has role {self.role!r}; the operation needs {needed!r}"
            )
        if gallery is not None and self.role != "admin" and gallery not in self.galleries:
            raise PermissionDenied(f"this API key is not valid for gallery {gallery!r}")

    def holds(self, secret: str) -> bool:
        """Whether ``secret`` is this key's (compared in constant time)."""
        return hmac.compare_digest(self.secret_sha256, _digest(secret))

    def public(self) -> dict[str, object]:
        """What `keys list` shows: everything but the hash."""
        view = asdict(self)
        del view["secret_sha256"]
        return view


ADMIN = ApiKey("local", "admin", (), 0.0, "", "auth disabled")
"""The caller of every request when authentication is switched off (local demo only)."""


class KeyStore:
    """Create, look up, list and revoke API keys in Redis."""

    def __init__(self, redis_url: str, prefix: str, client: redis.Redis | None = None) -> None:
        self.url = redis_url
        self.redis = client or redis.Redis.from_url(redis_url, socket_timeout=5)
        self.key = f"{prefix}:api-keys"

    def create(self, role: str, galleries: list[str], name: str = "") -> tuple[ApiKey, str]:
        """A new key and its token (shown once: only its hash is kept)."""
        checked, scopes = _checked(role, galleries)
        key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        key = ApiKey(key_id, checked, scopes, time.time(), _digest(secret), name)
        self._call(self.redis.hset, self.key, key_id, json.dumps(asdict(key)))
        return key, f"{_TOKEN_PREFIX}{key_id}_{secret}"

    def register(
        self, token: str, role: str, galleries: list[str], name: str = "", sole: bool = False
    ) -> ApiKey:
        """Store a key whose token was made elsewhere (a Kubernetes Secret: the chart's
        admin key), so that a deployment declares its keys instead of printing them once.
        Registering the same token again only updates its role, galleries and name (an
        upgrade re-runs it); another secret under a key id already taken is refused.
        ``sole``: revoke every other key of this name, so that a rotated Secret leaves no
        earlier key valid. Surrounding whitespace is not part of a token (a Secret made
        from a file ends in a newline)."""
        checked, scopes = _checked(role, galleries)
        if sole and not name:
            raise InvalidInput("a sole key needs a name: the other keys of that name go")
        key_id, secret = _split(token.strip())
        if not key_id.isalnum() or len(secret) < 32:
            raise InvalidInput(
                "a key to register must read fgk_<id>_<secret>: a letters-and-digits id and "
                "a random secret of at least 32 characters"
            )
        known = self._stored(key_id)
        if known is not None and not known.holds(secret):
            raise InvalidInput(
                f"key id {key_id!r} is taken by another secret: revoke it first "
                "(`facegallery keys revoke`) or give this key another id"
            )
        created = known.created_at if known is not None else time.time()
        key = ApiKey(key_id, checked, scopes, created, _digest(secret), name)
        self._call(self.redis.hset, self.key, key_id, json.dumps(asdict(key)))
        if sole:
            earlier = [k.key_id for k in self.list() if k.name == name and k.key_id != key_id]
            if earlier:
                self._call(self.redis.hdel, self.key, *earlier)
        return key

    def authenticate(self, token: str | None) -> ApiKey:
        """The key a token belongs to, or Unauthenticated saying what is wrong with it."""
        if not token:
            raise Unauthenticated(
                "an API key is required: send it as the x-api-key header (HTTP) or metadata "
                "entry (gRPC); create one with `facegallery keys create`"
            )
        key_id, secret = _split(token)
        if not key_id or not secret:
            raise Unauthenticated("malformed API key: expected fgk_<id>_<secret>")
        key = self._stored(key_id)
        if key is None or not key.holds(secret):
            raise Unauthenticated("unknown or revoked API key")
        return key

    def _stored(self, key_id: str) -> ApiKey | None:
        raw = self._call(self.redis.hget, self.key, key_id)
        return _parse(raw) if raw else None

    def list(self) -> list[ApiKey]:
        raw = self._call(self.redis.hgetall, self.key)
        return sorted((_parse(v) for v in raw.values()), key=lambda k: k.created_at)

    def revoke(self, key_id: str) -> None:
        if not self._call(self.redis.hdel, self.key, key_id):
            raise NotFound(f"no API key with id {key_id!r}")

    def _call(self, call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except redis.RedisError as exc:
            raise Unavailable(
                f"the key store (Redis at {redacted(self.url)}) is not reachable: {exc}"
            ) from exc


def _checked(role: str, galleries: list[str]) -> tuple[Role, tuple[str, ...]]:
    """The role and the galleries of a key, or InvalidInput saying what is wrong."""
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    scopes = tuple(sorted({ids.gallery_id(g) for g in galleries}))
    if role != "admin" and not scopes:
        raise InvalidInput(f"a {role} key needs at least one --gallery")
    return role, scopes


def _split(token: str) -> tuple[str, str]:
    """A token's key id and secret; both empty unless it starts with the prefix."""
    if not token.startswith(_TOKEN_PREFIX):
        return "", ""
    key_id, _, secret = token.removeprefix(_TOKEN_PREFIX).partition("_")
    return key_id, secret


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _parse(raw: bytes | str) -> ApiKey:
    fields = json.loads(raw)
    fields["galleries"] = tuple(fields["galleries"])
    return ApiKey(**fields)
