"""The user registry: one row per enrolled user, so listing users and stats cost O(page).

Milvus has no DISTINCT: listing a gallery's users from the templates alone reads every
template. The registry is a second collection beside the templates, keyed ``gallery/user``,
with the user's template count and when they were created and last changed. A limited query
in key order (the iterator flag) returns the smallest keys, and within one gallery the keys
order like the user ids, so a page is one query: ``gallery == g and user_key > "g/<after>"``,
limit N.

The registry is derived data, kept in step under the per-user lease: an add counts the
templates it newly stored onto an existing row (a primary-key lookup, O(batch)); a new
user's row, a row found missing, a retried add and a delete set the count from a Strong
read of the user's templates, so a registry write lost after its templates landed (an
error, a killed worker) is mended by the retry; ``rebuild`` recomputes every row from the
templates (for a gallery written before the registry existed, or after writes that
bypassed the lease).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from pymilvus import DataType, MilvusClient

from facegallery.core import ids
from facegallery.gallery.connection import (
    PLACEHOLDER,
    PLACEHOLDER_ROW,
    MilvusConnection,
    gallery_filter,
    quoted,
)

_KEY_MAX = ids.GALLERY_MAX + 1 + ids.USER_MAX


@dataclass(frozen=True)
class UserRecord:
    """A registry row: a user, how many templates they hold, and when (ms since the epoch)."""

    user_id: str
    templates: int
    created_at: int
    updated_at: int


def registry_key(gallery: str, user_id: str) -> str:
    return f"{gallery}/{user_id}"


class UserRegistry:
    """One row per user of every gallery of one embedding model."""

    def __init__(self, connection: MilvusConnection, collection: str) -> None:
        self.connection = connection
        self.collection = collection

    def ensure(self) -> bool:
        """Create the collection if missing; True when it was created just now."""
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("user_key", DataType.VARCHAR, is_primary=True, max_length=_KEY_MAX)
        schema.add_field(
            "gallery", DataType.VARCHAR, max_length=ids.GALLERY_MAX, is_partition_key=True
        )
        schema.add_field("user_id", DataType.VARCHAR, max_length=ids.USER_MAX)
        schema.add_field("templates", DataType.INT64)
        schema.add_field("created_at", DataType.INT64)
        schema.add_field("updated_at", DataType.INT64)
        return self.connection.ensure_collection(self.collection, schema)

    def add(self, gallery: str, added: dict[str, int], settle: bool = True) -> list[str]:
        """Count newly stored templates onto existing rows. Returns the users whose row
        must be derived from a Strong read of their templates instead, once those are
        written: a row that is missing, or a retried write (nothing new), since the
        registry write of an earlier try may have been lost after its templates landed."""
        existing = self._rows(gallery, list(added))
        counts = {
            user: existing[user].templates + n
            for user, n in added.items()
            if n and user in existing
        }
        self.update(gallery, counts, settle, existing)
        return [user for user, n in added.items() if not n or user not in existing]

    def update(
        self,
        gallery: str,
        counts: dict[str, int],
        settle: bool = True,
        existing: dict[str, UserRecord] | None = None,
    ) -> None:
        """Set these users' template counts (0 removes the user)."""
        if not counts:
            return
        now = int(time.time() * 1000)
        if existing is None:
            existing = self._rows(gallery, list(counts))
        rows: list[dict[str, Any]] = []
        gone: list[str] = []
        for user_id, count in counts.items():
            if count == 0:
                gone.append(registry_key(gallery, user_id))
                continue
            before = existing.get(user_id)
            rows.append(
                {
                    "user_key": registry_key(gallery, user_id),
                    "gallery": gallery,
                    "user_id": user_id,
                    "templates": count,
                    "created_at": before.created_at if before else now,
                    "updated_at": now,
                    PLACEHOLDER: PLACEHOLDER_ROW,
                }
            )
        if gone:
            self.connection.delete(self.collection, f"user_key in [{quoted(gone)}]")
        stored = {registry_key(gallery, u) for u in existing}
        self.connection.replace(self.collection, "user_key", rows, stored)
        if settle:
            self.connection.settle(self.collection)

    def get(self, gallery: str, user_id: str) -> UserRecord | None:
        return self._rows(gallery, [user_id]).get(user_id)

    def page(self, gallery: str, after: str | None, limit: int) -> list[UserRecord]:
        """Users in id order after ``after``: one query of ``limit`` rows."""
        expression = gallery_filter(gallery)
        if after is not None:
            expression += f' and user_key > "{registry_key(gallery, after)}"'
        rows = self.connection.query(
            self.collection, expression, _FIELDS, limit=limit, key_order=True
        )
        return sorted((_record(r) for r in rows), key=lambda r: r.user_id)

    def count(self, gallery: str) -> int:
        return self.connection.count(self.collection, gallery_filter(gallery))

    def rebuild(self, gallery_counts: dict[str, Counter[str]]) -> None:
        """Recompute every row from template counts per gallery and user."""
        for gallery, counts in gallery_counts.items():
            users = list(counts)
            for start in range(0, len(users), 1000):
                self.update(gallery, {u: counts[u] for u in users[start : start + 1000]})

    def _rows(self, gallery: str, user_ids: list[str]) -> dict[str, UserRecord]:
        keys = [registry_key(gallery, u) for u in user_ids]
        rows = self.connection.lookup(
            self.collection, "user_key", keys, _FIELDS, gallery_filter(gallery)
        )
        return {r["user_id"]: _record(r) for r in rows}


_FIELDS = ["user_id", "templates", "created_at", "updated_at"]


def _record(row: dict[str, Any]) -> UserRecord:
    return UserRecord(
        row["user_id"], int(row["templates"]), int(row["created_at"]), int(row["updated_at"])
    )
