"""One Milvus client for the gallery's collections, with the backend differences in one place.

Milvus Lite (a local file, in-process) and a Milvus server (2.3.5 as the project runs it, or a
newer cluster) answer the same verbs differently, and everything the gallery must do about it
lives here:

- **Idempotent writes**: server 2.3.5 stores ``upsert`` rows of a partition-key collection where
  ``gallery == ...`` filters cannot find them, so a write is "delete the primary keys already
  stored, then insert" on every backend (one code path, tested on both).
- **Read your writes**: a server's default (Bounded) reads do not see a write just made.
  Every write ends with a barrier: on a server one Strong read of the collection, after which
  Bounded reads from *any* client see the write (tested with inserts, deletes and searches
  read from a second client); on Lite a flush, because Lite searches unsealed data by
  brute force. Reads then stay at the configured level (Bounded, where Strong waits
  about two time ticks).
- **Errors** become ``Unavailable`` with Milvus's message; nothing else leaks out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pymilvus import CollectionSchema, DataType, MilvusClient, MilvusException

from facegallery.core import ids
from facegallery.core.config import GallerySettings
from facegallery.core.errors import Unavailable, redacted

# Milvus 2.3 refuses a query or search whose limit (or offset + limit) exceeds this.
MAX_LIMIT = 16384
# Milvus needs a vector field in every collection: the side collections (user registry,
# calibrations, crops) carry a 2-d one that is never searched.
PLACEHOLDER = "placeholder"
PLACEHOLDER_ROW = [0.0, 0.0]


def quoted(values: list[str]) -> str:
    """``"a", "b"`` for an ``in [...]`` filter (the values are validated ids or keys)."""
    return ", ".join(f'"{v}"' for v in values)


def gallery_filter(gallery: str) -> str:
    return f'gallery == "{ids.gallery_id(gallery)}"'


def user_filter(gallery: str, user_id: str) -> str:
    return f'{gallery_filter(gallery)} and user_id == "{ids.user_id(user_id)}"'


def template_filter(template_ids: list[str]) -> str:
    return f"template_id in [{quoted([ids.template_id(t) for t in template_ids])}]"


class MilvusConnection:
    """The gallery's client: verbs with Milvus errors mapped, writes that settle."""

    def __init__(self, settings: GallerySettings) -> None:
        logging.getLogger("pymilvus").setLevel(logging.CRITICAL)  # we raise our own errors
        self.settings = settings
        self.embedded = "://" not in settings.uri
        uri = settings.uri
        if self.embedded:
            path = Path(uri).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            uri = str(path)
        try:
            self.client = MilvusClient(uri=uri, token=settings.token)
        except MilvusException as exc:
            hint = (
                ". A Milvus Lite file can be opened by one process only; several processes "
                "need a Milvus server (`facegallery milvus start`, then gallery.uri)"
                if self.embedded
                else ""
            )
            raise Unavailable(
                f"Milvus at {redacted(settings.uri)} is not usable: {exc.message}{hint}"
            ) from exc

    def ensure_collection(
        self,
        collection: str,
        schema: CollectionSchema,
        vector: str = PLACEHOLDER,
        index: dict[str, Any] | None = None,
    ) -> bool:
        """Load ``collection``, creating it from ``schema`` first when it is missing, with
        ``index`` on its ``vector`` field (default: the placeholder's FLAT L2, added to the
        schema here). True when it was created just now."""
        if self.exists(collection):
            return False
        if index is None:
            schema.add_field(PLACEHOLDER, DataType.FLOAT_VECTOR, dim=len(PLACEHOLDER_ROW))
            index = {"metric_type": "L2", "index_type": "FLAT", "params": {}}
        params = self.client.prepare_index_params()
        params.add_index(vector, **index)
        self.call("create_collection", collection, schema=schema, index_params=params)
        return True

    def exists(self, collection: str) -> bool:
        """Whether ``collection`` is there (loaded when it is)."""
        if not self.call("has_collection", collection):
            return False
        self.call("load_collection", collection)
        return True

    def call(self, verb: str, *args: Any, **kwargs: Any) -> Any:
        """``client.<verb>(...)``, with Milvus's failures as ``Unavailable``."""
        return self.call_on(self.client, verb, *args, **kwargs)

    def call_on(self, target: object, verb: str, *args: Any, **kwargs: Any) -> Any:
        """``target.<verb>(...)`` (a client or an iterator) with errors mapped."""
        try:
            return getattr(target, verb)(*args, **kwargs)
        except MilvusException as exc:
            raise Unavailable(f"Milvus {verb} failed: {exc.message}") from exc

    def query(
        self,
        collection: str,
        expression: str,
        fields: list[str],
        limit: int = MAX_LIMIT,
        key_order: bool = False,
        strong: bool = False,
    ) -> list[dict[str, Any]]:
        """Rows matching ``expression`` at the read consistency level (at most ``limit``);
        ``strong`` reads every write acknowledged so far.

        ``key_order``: the ``limit`` rows with the smallest primary keys, which is what a
        page needs. Milvus Lite otherwise returns rows in segment order; the flag is the one
        pymilvus's own query iterator sends for ordered paging."""
        ordered = {"iterator": "True", "reduce_stop_for_best": "True"} if key_order else {}
        rows: list[dict[str, Any]] = self.call(
            "query",
            collection,
            filter=expression,
            output_fields=fields,
            limit=limit,
            consistency_level="Strong" if strong else self.settings.read_consistency,
            **ordered,
        )
        return rows

    def pages(
        self, collection: str, expression: str, fields: list[str], page: int
    ) -> Iterator[list[dict[str, Any]]]:
        """Every row matching ``expression``, ``page`` at a time: one pass of Milvus's query
        iterator, O(page) memory whatever the collection's size."""
        iterator = self.call(
            "query_iterator",
            collection,
            batch_size=page,
            filter=expression,
            output_fields=fields,
        )
        try:
            while batch := self.call_on(iterator, "next"):
                yield batch
        finally:
            iterator.close()

    def lookup(
        self, collection: str, key: str, values: list[str], fields: list[str], scope: str = ""
    ) -> list[dict[str, Any]]:
        """Rows whose ``key`` is one of ``values`` (a primary-key lookup, O(len(values))),
        in chunks that each stay within Milvus's limit."""
        rows: list[dict[str, Any]] = []
        prefix = f"{scope} and " if scope else ""
        for start in range(0, len(values), MAX_LIMIT):
            chunk = values[start : start + MAX_LIMIT]
            expression = f"{prefix}{key} in [{quoted(chunk)}]"
            rows += self.query(collection, expression, fields, len(chunk))
        return rows

    def count(self, collection: str, expression: str, strong: bool = False) -> int:
        """How many rows match; ``strong`` reads every write acknowledged so far."""
        rows = self.call(
            "query",
            collection,
            filter=expression,
            output_fields=["count(*)"],
            consistency_level="Strong" if strong else self.settings.read_consistency,
        )
        return int(rows[0]["count(*)"])

    def replace(
        self, collection: str, primary_key: str, rows: list[dict[str, Any]], stored: set[str]
    ) -> None:
        """Write ``rows`` so that a retried write leaves one copy of each: delete the keys
        that are ``stored`` already (the caller looked them up), then insert. The delete
        names primary keys only, which a server applies without querying for matches; the
        keys are unique across galleries (derived from the gallery and user)."""
        if not rows:
            return
        doomed = [row[primary_key] for row in rows if row[primary_key] in stored]
        if doomed:
            self.call("delete", collection, filter=f"{primary_key} in [{quoted(doomed)}]")
        self.call("insert", collection, rows)

    def delete(self, collection: str, expression: str) -> None:
        self.call("delete", collection, filter=expression)

    def seal(self, collection: str) -> None:
        """On Lite, seal what was written so searches use the index. A server seals by
        itself (and rate-limits flushes); its barrier is a Strong read, which the gallery
        makes after every write (``settle``, or a delete's Strong recount)."""
        if self.embedded:
            self.call("flush", collection)

    def settle(self, collection: str) -> None:
        """The write barrier: after it, reads at the configured level see every earlier
        write to ``collection``."""
        self.seal(collection)
        if not self.embedded:
            self.count(collection, "", strong=True)
