"""Templates in Milvus: one collection per embedding model id, many galleries (tenants) in it.

Fields: ``template_id`` (primary key, deterministic, so a retried add is an idempotent upsert),
``gallery`` (partition key), ``user_id``, ``embedding`` (COSINE), ``quality``, ``created_at``
(ms since the epoch) and ``source`` (the job or image it came from). Identification is one
search per batch of probes with ``group_by_field="user_id"``: each hit is a user, scored by
their best template. Every id is validated (``facegallery.ids``) before it is written into a
filter expression, which is the only way Milvus Lite takes them.

Milvus Lite searches unsealed (growing) data by brute force, an order of magnitude slower than
sealed data on the CI machine, and seals only on its own schedule; so the embedded gallery
flushes after every write (milliseconds for a small write). A Milvus server seals and indexes
by itself, and rate-limits flushes: there, writes never flush.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pymilvus import DataType, MilvusClient, MilvusException

from facegallery import ids
from facegallery.config import GallerySettings
from facegallery.errors import InvalidInput, Unavailable

SOURCE_MAX = 512
_PAGE = 1000


@dataclass(frozen=True)
class NewTemplate:
    """A template to store. ``embedding``: (D,) unit float32."""

    template_id: str
    embedding: np.ndarray
    quality: float
    source: str


@dataclass(frozen=True)
class Template:
    """A stored template."""

    template_id: str
    user_id: str
    embedding: np.ndarray
    quality: float
    source: str
    created_at: int


@dataclass(frozen=True)
class Candidate:
    """A user returned by a search, scored by their best template's cosine similarity."""

    user_id: str
    score: float
    template_id: str


@dataclass(frozen=True)
class GalleryStats:
    users: int
    templates: int


def collection_name(model_id: str) -> str:
    """Milvus names allow letters, digits and underscores only."""
    return "faces_" + re.sub(r"[^A-Za-z0-9]", "_", model_id)


class Gallery:
    """The templates of every gallery for one embedding model."""

    def __init__(self, settings: GallerySettings, model_id: str, dimension: int) -> None:
        self.settings = settings
        self.model_id = model_id
        self.dimension = dimension
        self.collection = collection_name(model_id)
        logging.getLogger("pymilvus").setLevel(logging.CRITICAL)  # we raise our own errors
        uri = settings.uri
        self.embedded = "://" not in uri
        if self.embedded:
            Path(uri).expanduser().parent.mkdir(parents=True, exist_ok=True)
            uri = str(Path(uri).expanduser())
        try:
            self.client = MilvusClient(uri=uri, token=settings.token)
            self._ensure_collection()
        except MilvusException as exc:
            raise Unavailable(f"Milvus at {settings.uri} is not usable: {exc.message}") from exc

    def add(
        self, gallery: str, user_id: str, templates: list[NewTemplate], flush: bool = True
    ) -> list[str]:
        """Store (upsert) templates for a user; returns their ids. Bulk loaders pass
        ``flush=False`` and call ``flush()`` once at the end."""
        gallery, user_id = ids.gallery_id(gallery), ids.user_id(user_id)
        now = int(time.time() * 1000)
        rows = []
        for t in templates:
            ids.template_id(t.template_id)
            if t.embedding.shape != (self.dimension,):
                raise InvalidInput(
                    f"embedding has shape {t.embedding.shape}, this gallery stores "
                    f"({self.dimension},) vectors of {self.model_id}"
                )
            rows.append(
                {
                    "template_id": t.template_id,
                    "gallery": gallery,
                    "user_id": user_id,
                    "embedding": t.embedding.astype(np.float32).tolist(),
                    "quality": float(t.quality),
                    "created_at": now,
                    "source": t.source[:SOURCE_MAX],
                }
            )
        if rows:
            self._call(self.client.upsert, self.collection, rows)
            if flush:
                self.flush()
        return [t.template_id for t in templates]

    def flush(self) -> None:
        """Seal what was written so searches use the index (embedded Milvus Lite only)."""
        if self.embedded:
            self._call(self.client.flush, self.collection)

    def search(self, gallery: str, probes: np.ndarray, top_k: int) -> list[list[Candidate]]:
        """The ``top_k`` best users for each probe (N, D), best first, one hit per user."""
        gallery = ids.gallery_id(gallery)
        if len(probes) == 0:
            return []
        results = self._call(
            self.client.search,
            self.collection,
            data=np.asarray(probes, np.float32).tolist(),
            filter=f'gallery == "{gallery}"',
            limit=top_k,
            group_by_field="user_id",
            output_fields=["user_id", "template_id"],
            search_params={"metric_type": "COSINE", "params": self._search_params()},
        )
        return [
            [
                Candidate(
                    hit["entity"]["user_id"], float(hit["distance"]), hit["entity"]["template_id"]
                )
                for hit in hits
            ]
            for hits in results
        ]

    def templates(self, gallery: str, user_id: str) -> list[Template]:
        """Every template of one user, with embeddings."""
        expression = self._user_filter(gallery, user_id)
        fields = ["template_id", "user_id", "embedding", "quality", "source", "created_at"]
        rows = self._call(
            self.client.query, self.collection, filter=expression, output_fields=fields
        )
        return sorted(
            (
                Template(
                    r["template_id"],
                    r["user_id"],
                    np.asarray(r["embedding"], np.float32),
                    float(r["quality"]),
                    r["source"],
                    int(r["created_at"]),
                )
                for r in rows
            ),
            key=lambda t: t.template_id,
        )

    def users(self, gallery: str, after: str | None = None, limit: int = 100) -> list[str]:
        """User ids of a gallery in order, ``limit`` at a time after ``after`` (a page cursor).

        Milvus has no DISTINCT, so this reads the gallery's user_id column: O(templates).
        """
        if after is not None:
            ids.user_id(after)
        if limit < 1:
            raise InvalidInput("limit must be at least 1")
        users = {u for u in self._column(gallery, "user_id") if after is None or u > after}
        return sorted(users)[:limit]

    def delete_user(self, gallery: str, user_id: str) -> int:
        """Delete every template of a user and check they are gone; returns how many."""
        expression = self._user_filter(gallery, user_id)
        count = self._count(expression)
        if count:
            self._call(self.client.delete, self.collection, filter=expression)
            self.flush()
        remaining = self._count(expression)
        if remaining:
            raise Unavailable(f"{remaining} templates of {user_id} are still there after delete")
        return count

    def delete_templates(self, gallery: str, template_ids: list[str]) -> None:
        gallery = ids.gallery_id(gallery)
        if not template_ids:
            return
        listed = ", ".join(f'"{ids.template_id(t)}"' for t in template_ids)
        expression = f'gallery == "{gallery}" and template_id in [{listed}]'
        self._call(self.client.delete, self.collection, filter=expression)
        self.flush()

    def stats(self, gallery: str) -> GalleryStats:
        users = set(self._column(gallery, "user_id"))
        return GalleryStats(users=len(users), templates=self._count(self._gallery_filter(gallery)))

    def drop(self) -> None:
        """Remove the whole collection (every gallery of this model)."""
        self._call(self.client.drop_collection, self.collection)

    def _ensure_collection(self) -> None:
        if self.client.has_collection(self.collection):
            self.client.load_collection(self.collection)
            return
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("template_id", DataType.VARCHAR, is_primary=True, max_length=32)
        schema.add_field(
            "gallery", DataType.VARCHAR, max_length=ids.GALLERY_MAX, is_partition_key=True
        )
        schema.add_field("user_id", DataType.VARCHAR, max_length=ids.USER_MAX)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=self.dimension)
        schema.add_field("quality", DataType.FLOAT)
        schema.add_field("created_at", DataType.INT64)
        schema.add_field("source", DataType.VARCHAR, max_length=SOURCE_MAX)
        index = self.client.prepare_index_params()
        index.add_index("embedding", metric_type="COSINE", **self._index_spec())
        self.client.create_collection(self.collection, schema=schema, index_params=index)

    @property
    def index_type(self) -> str:
        if self.settings.index_type == "auto":
            return "FLAT" if self.embedded else "HNSW"
        return self.settings.index_type

    def _index_spec(self) -> dict[str, Any]:
        s = self.settings
        if self.index_type == "HNSW":
            return {
                "index_type": "HNSW",
                "params": {"M": s.hnsw_m, "efConstruction": s.hnsw_ef_construction},
            }
        if self.index_type == "IVF_FLAT":
            return {"index_type": "IVF_FLAT", "params": {"nlist": s.ivf_nlist}}
        return {"index_type": self.index_type, "params": {}}

    def _search_params(self) -> dict[str, int]:
        if self.index_type == "HNSW":
            return {"ef": self.settings.search_ef}
        if self.index_type == "IVF_FLAT":
            return {"nprobe": self.settings.ivf_nprobe}
        return {}

    def _gallery_filter(self, gallery: str) -> str:
        return f'gallery == "{ids.gallery_id(gallery)}"'

    def _user_filter(self, gallery: str, user_id: str) -> str:
        return f'{self._gallery_filter(gallery)} and user_id == "{ids.user_id(user_id)}"'

    def _count(self, expression: str) -> int:
        rows = self._call(
            self.client.query, self.collection, filter=expression, output_fields=["count(*)"]
        )
        return int(rows[0]["count(*)"])

    def _column(self, gallery: str, field: str) -> Iterator[str]:
        iterator = self._call(
            self.client.query_iterator,
            self.collection,
            batch_size=_PAGE,
            filter=self._gallery_filter(gallery),
            output_fields=[field],
        )
        try:
            while batch := self._call(iterator.next):
                yield from (row[field] for row in batch)
        finally:
            iterator.close()

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except MilvusException as exc:
            raise Unavailable(
                f"Milvus {getattr(method, '__name__', 'call')} failed: {exc.message}"
            ) from exc
