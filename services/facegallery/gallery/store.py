"""Templates in Milvus: one collection per embedding model id, many galleries (tenants) in it.

Fields: ``template_id`` (primary key, deterministic, so a retried add rewrites instead of
duplicating), ``gallery`` (partition key), ``user_id``, ``embedding`` (COSINE), ``quality``,
``created_at`` (ms since the epoch) and ``source`` (the job or image it came from). Beside it,
the user registry (``registry.py``) keeps one row per user for listing and stats.

Identification is one search per batch of probes, grouped by user: each candidate is a user,
scored from their templates by ``gallery.fusion`` (``fusion.py``). By default the grouping is
done here, not by Milvus: server 2.3 silently ignores ``group_by_field``. The search fetches
``top_k x max_templates_per_user`` templates and groups them by user; for ``max`` (each
user's best) that is exact for an exact search: a user holds at most ``cap`` templates, so
the k-th best user's best template ranks at most ``(k - 1) * cap + 1``; ``top2_mean`` fetches
enough for ``max(top_k, cohort_size)`` users and fuses those.
Every id is validated (``facegallery.core.ids``) before it is written into a filter expression.
With ``gallery.keep_crops``, each template's sheet (its aligned crop and dlib's chip) is kept
beside it (``crops.py``) for ``facegallery reembed``.

Backend differences (upsert, read-your-writes, Lite's brute force on unsealed data) are
handled once, in ``connection.py``.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, get_args

import numpy as np
from pymilvus import DataType, MilvusClient

from facegallery.core import ids
from facegallery.core.config import FusionName, GallerySettings
from facegallery.core.errors import InvalidInput, NotFound, Unavailable
from facegallery.gallery.connection import (
    MAX_LIMIT,
    MilvusConnection,
    gallery_filter,
    quoted,
    template_filter,
    user_filter,
)
from facegallery.gallery.crops import CropStore
from facegallery.gallery.fusion import MAX, Candidate, best_template, fuse_top_two
from facegallery.gallery.impostor_samples import ImpostorSampleStore
from facegallery.gallery.registry import UserRecord, UserRegistry

SOURCE_MAX = 512
_PAGE = 1000
_INFO_FIELDS = ["template_id", "quality", "source", "created_at"]


@dataclass(frozen=True)
class NewTemplate:
    """A template to store. ``embedding``: (D,) unit float32; ``crop``: the aligned crop it
    was embedded from (kept only with ``gallery.keep_crops``); ``created_at``: when it was
    first enrolled (ms; None: now), kept by a move to another model."""

    template_id: str
    embedding: np.ndarray
    quality: float
    source: str
    crop: np.ndarray | None = None
    created_at: int | None = None


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
class TemplateInfo:
    """A stored template without its embedding: what a person or an API client sees."""

    template_id: str
    quality: float
    source: str
    created_at: int


@dataclass(frozen=True)
class User:
    """An enrolled user and their templates (no embeddings)."""

    user_id: str
    templates: list[TemplateInfo]
    created_at: int
    updated_at: int


@dataclass(frozen=True)
class GalleryStats:
    users: int
    templates: int


def collection_name(model_id: str) -> str:
    """Milvus names allow letters, digits and underscores only."""
    return "faces_" + "".join(c if c.isascii() and c.isalnum() else "_" for c in model_id)


class Gallery:
    """The templates and users of every gallery for one embedding model."""

    def __init__(self, settings: GallerySettings, model_id: str, dimension: int) -> None:
        self.settings = settings
        self.model_id = model_id
        self.dimension = dimension
        self.collection = collection_name(model_id)
        self.connection = MilvusConnection(settings)
        self.embedded = self.connection.embedded
        suffix = self.collection[len("faces_") :]
        self.registry = UserRegistry(self.connection, "users_" + suffix)
        # Scores differ by fusion, and so do their calibrations: one store for each.
        self.impostor_sample_collections = [f"opsets_{f}_{suffix}" for f in get_args(FusionName)]
        self.impostor_samples = ImpostorSampleStore(
            self.connection, f"opsets_{settings.fusion}_{suffix}"
        )
        self.crops = CropStore(self.connection, "crops_" + suffix)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="registry")
        self._ensure_collection()
        if self.registry.ensure():
            self.rebuild_registry()
        self.impostor_samples.ensure()
        self.crops.open(create=settings.keep_crops)

    def add(
        self, gallery: str, user_id: str, templates: list[NewTemplate], settle: bool = True
    ) -> list[str]:
        """Store templates for one user (a retried add rewrites the same rows); returns ids."""
        self.add_many(gallery, {user_id: templates}, settle)
        return [t.template_id for t in templates]

    def add_many(
        self, gallery: str, batch: dict[str, list[NewTemplate]], settle: bool = True
    ) -> None:
        """Store templates for many users in a few calls (bulk enrollment), then update
        their registry rows: known users incrementally (a primary-key lookup of which
        templates were already stored, O(batch)); new users, missing rows and retries from
        a Strong read of those users' templates (one query per batch of users, O(their
        templates)), never by re-reading the gallery.
        ``settle=False`` (bulk loaders) leaves the write barrier to one ``settle()`` at the
        end. Kept crops are written first: a template is never stored without its crop."""
        gallery = ids.gallery_id(gallery)
        now = int(time.time() * 1000)
        rows: list[dict[str, Any]] = []
        crops: dict[str, tuple[str, np.ndarray]] = {}
        for user_id, templates in batch.items():
            ids.user_id(user_id)
            rows.extend(self._row(gallery, user_id, t, now) for t in templates)
            crops |= {t.template_id: (user_id, t.crop) for t in templates if t.crop is not None}
        if not rows:
            return
        if self.settings.keep_crops:
            self.crops.put(gallery, crops, settle)
        stored = self.stored([row["template_id"] for row in rows])
        added = Counter(r["user_id"] for r in rows if r["template_id"] not in stored)
        # The two collections are written side by side: most of each write is waiting
        # on Milvus, and neither depends on the other.
        registry = self._writer.submit(
            self.registry.add, gallery, {u: added[u] for u in batch}, settle
        )
        self.connection.replace(self.collection, "template_id", rows, stored)
        uncounted = registry.result()
        if settle:
            self.connection.settle(self.collection)
        self._recount(gallery, uncounted, settle)

    @property
    def keeps_sheets(self) -> bool:
        """Whether enrolled faces' sheets are kept (``vision.sheet``): crops are kept, in a
        collection of sheets (one made before sheets keeps aligned crops alone)."""
        return self.settings.keep_crops and len(self.crops.fields) > 1

    def settle(self) -> None:
        """The write barrier for bulk loaders that passed ``settle=False``."""
        self.connection.settle(self.collection)
        self.connection.settle(self.registry.collection)
        if self.crops.present:
            self.connection.settle(self.crops.collection)

    def search(self, gallery: str, probes: np.ndarray, top_k: int) -> list[list[Candidate]]:
        """The ``top_k`` best users for each probe (N, D), best first, one hit per user."""
        gallery = ids.gallery_id(gallery)
        if len(probes) == 0:
            return []
        cap = self.settings.max_templates_per_user
        server_groups = self.settings.grouping == "server"
        users = max(top_k, self.settings.cohort_size) if self.fuses else top_k
        limit = top_k if server_groups else min(users * cap, MAX_LIMIT)
        grouping: dict[str, Any] = {"group_by_field": "user_id"} if server_groups else {}
        results = self.connection.call(
            "search",
            self.collection,
            data=np.asarray(probes, np.float32).tolist(),
            filter=gallery_filter(gallery),
            limit=limit,
            output_fields=["user_id", "template_id"],
            search_params={"metric_type": "COSINE", "params": self._search_params(limit)},
            consistency_level=self.settings.read_consistency,
            **grouping,
        )
        if not self.fuses:
            return [best_template(hits, top_k) for hits in results]
        return fuse_top_two(
            results, probes, limit, top_k, users, lambda found: self._embeddings(gallery, found)
        )

    @property
    def fuses(self) -> bool:
        """Whether a search fuses each user's templates (``top2_mean``): then it fuses the
        ``max(top_k, cohort_size)`` users with the best templates, and a wider search
        can change the ranking, so a decision must always search the same number."""
        return self.settings.grouping != "server" and self.settings.fusion != MAX

    def sample_templates(self, gallery: str, size: int, seed: int) -> tuple[list[str], np.ndarray]:
        """About ``size`` of a gallery's templates, (user ids, embeddings (n, D)), read by one
        query. Template ids are hash digests, so the templates whose ids fall in a range are
        a uniform sample: a range of ``size / templates`` of the id space, starting where
        ``seed`` and the gallery name put it (the same sample every time, plus the new
        templates that fall in it)."""
        gallery = ids.gallery_id(gallery)
        total = self.connection.count(self.collection, gallery_filter(gallery))
        expression = gallery_filter(gallery)
        if total > size:
            space = 16**8  # the first 8 hex digits of the id
            width = int(space * size / total)
            digest = hashlib.sha256(f"{seed}\0{gallery}".encode()).digest()
            start = int.from_bytes(digest[:4], "big") % space
            end = start + width
            low, high = f'"{start:08x}"', f'"{end % space:08x}"'
            joined = "and" if end < space else "or"
            expression += f" and (template_id >= {low} {joined} template_id < {high})"
        # The range holds about ``size`` (binomially); the limit only guards the read.
        rows = self.connection.query(
            self.collection, expression, ["user_id", "embedding"], min(MAX_LIMIT, 2 * size)
        )
        users = [r["user_id"] for r in rows]
        vectors = np.asarray([r["embedding"] for r in rows], np.float32)
        return users, vectors.reshape(len(rows), self.dimension)

    def template_pages(
        self, gallery: str, page: int = _PAGE
    ) -> Iterator[list[tuple[str, TemplateInfo]]]:
        """Every template of a gallery as (user id, template), ``page`` at a time, without
        embeddings (O(page) memory)."""
        fields = ["user_id", *_INFO_FIELDS]
        for batch in self.connection.pages(self.collection, gallery_filter(gallery), fields, page):
            yield [(r["user_id"], _template_info(r)) for r in batch]

    def templates(self, gallery: str, user_id: str) -> list[Template]:
        """Every template of one user, with embeddings."""
        fields = ["user_id", "embedding", *_INFO_FIELDS]
        rows = self.connection.query(self.collection, user_filter(gallery, user_id), fields)
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

    def get_user(self, gallery: str, user_id: str) -> User:
        """A user's registry row and templates (ids, quality, source, created; no vectors)."""
        gallery, user_id = ids.gallery_id(gallery), ids.user_id(user_id)
        record = self.registry.get(gallery, user_id)
        if record is None:
            raise NotFound(f"user {user_id!r} is not enrolled in gallery {gallery!r}")
        rows = self.connection.query(self.collection, user_filter(gallery, user_id), _INFO_FIELDS)
        infos = sorted((_template_info(r) for r in rows), key=lambda t: t.template_id)
        return User(user_id, infos, record.created_at, record.updated_at)

    def users(self, gallery: str, after: str | None = None, limit: int = 100) -> list[str]:
        """User ids of a gallery in order, ``limit`` at a time after ``after`` (a page
        cursor): one registry query, O(page) whatever the gallery's size."""
        return [r.user_id for r in self.user_records(gallery, after, limit)]

    def user_records(
        self, gallery: str, after: str | None = None, limit: int = 100
    ) -> list[UserRecord]:
        gallery = ids.gallery_id(gallery)
        if after is not None:
            ids.user_id(after)
        if not 1 <= limit <= _PAGE:
            raise InvalidInput(f"limit must be between 1 and {_PAGE}, got {limit}")
        return self.registry.page(gallery, after, limit)

    def delete_user(self, gallery: str, user_id: str) -> int:
        """Delete every template of a user (their kept crops first) and check they are
        gone; returns how many."""
        expression = user_filter(gallery, user_id)
        self.crops.delete_user(gallery, user_id)
        count = self.connection.count(self.collection, expression, strong=True)
        if count:
            self.connection.delete(self.collection, expression)
            self.connection.seal(self.collection)
        self._recount(gallery, [user_id])
        remaining = self.connection.count(self.collection, expression, strong=True)
        if remaining:
            raise Unavailable(f"{remaining} templates of {user_id} are still there after delete")
        return count

    def delete_templates(self, gallery: str, user_id: str, template_ids: list[str]) -> None:
        """Delete some of a user's templates (the per-user cap's evictions)."""
        if not template_ids:
            return
        expression = f"{user_filter(gallery, user_id)} and {template_filter(template_ids)}"
        self.crops.delete(template_ids)
        self.connection.delete(self.collection, expression)
        self.connection.seal(self.collection)
        self._recount(gallery, [user_id])

    def stats(self, gallery: str) -> GalleryStats:
        """Users (registry rows) and templates of a gallery: two counts, no scan."""
        gallery = ids.gallery_id(gallery)
        return GalleryStats(
            users=self.registry.count(gallery),
            templates=self.connection.count(self.collection, gallery_filter(gallery)),
        )

    def rebuild_registry(self) -> None:
        """Recompute the registry from the templates (O(templates); run once, when the
        registry is new beside an existing template collection)."""
        counts: dict[str, Counter[str]] = {}
        for batch in self.connection.pages(self.collection, "", ["gallery", "user_id"], _PAGE):
            for row in batch:
                counts.setdefault(row["gallery"], Counter())[row["user_id"]] += 1
        self.registry.rebuild(counts)

    def drop(self) -> None:
        """Remove the templates and everything kept beside them (registry, every fusion's
        calibrations, crops) for every gallery of this model."""
        side = [self.registry.collection, *self.impostor_sample_collections, self.crops.collection]
        for name in [self.collection, *side]:
            if self.connection.call("has_collection", name):
                self.connection.call("drop_collection", name)
        self.crops.present = False

    def _embeddings(self, gallery: str, users: set[str]) -> dict[str, np.ndarray]:
        """Every template embedding (n, D) of each of ``users``: a few queries."""
        cap = self.settings.max_templates_per_user
        ordered, vectors = sorted(users), dict[str, np.ndarray]()
        per_query = max(1, MAX_LIMIT // cap)
        for start in range(0, len(ordered), per_query):
            chunk = [ids.user_id(u) for u in ordered[start : start + per_query]]
            expression = f"{gallery_filter(gallery)} and user_id in [{quoted(chunk)}]"
            rows = self.connection.query(
                self.collection, expression, ["user_id", "embedding"], len(chunk) * cap
            )
            found: dict[str, list[list[float]]] = {}
            for row in rows:
                found.setdefault(row["user_id"], []).append(row["embedding"])
            vectors |= {u: np.asarray(v, np.float32) for u, v in found.items()}
        return vectors

    def stored(self, template_ids: list[str]) -> set[str]:
        """Which of these template ids are stored already (a primary-key lookup)."""
        rows = self.connection.lookup(self.collection, "template_id", template_ids, ["template_id"])
        return {r["template_id"] for r in rows}

    def _recount(self, gallery: str, users: list[str], settle: bool = True) -> None:
        """Set users' registry rows from a Strong read of their templates (a few queries,
        O(templates of those users); after a delete it is also the server's barrier)."""
        # A user holds at most the cap, and twice it between an add and its evictions, so a
        # query over this many users never reaches Milvus's row limit.
        per_query = max(1, MAX_LIMIT // (2 * self.settings.max_templates_per_user))
        for start in range(0, len(users), per_query):
            chunk = [ids.user_id(u) for u in users[start : start + per_query]]
            expression = f"{gallery_filter(gallery)} and user_id in [{quoted(chunk)}]"
            rows = self.connection.query(
                self.collection, expression, ["user_id"], MAX_LIMIT, strong=True
            )
            found = Counter(row["user_id"] for row in rows)
            self.registry.update(gallery, {user: found[user] for user in chunk}, settle)

    def _row(self, gallery: str, user_id: str, t: NewTemplate, now: int) -> dict[str, Any]:
        ids.template_id(t.template_id)
        if t.embedding.shape != (self.dimension,):
            raise InvalidInput(
                f"embedding has shape {t.embedding.shape}, this gallery stores "
                f"({self.dimension},) vectors of {self.model_id}"
            )
        return {
            "template_id": t.template_id,
            "gallery": gallery,
            "user_id": user_id,
            "embedding": t.embedding.astype(np.float32).tolist(),
            "quality": float(t.quality),
            "created_at": now if t.created_at is None else t.created_at,
            "source": t.source[:SOURCE_MAX],
        }

    def _ensure_collection(self) -> None:
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
        index = {"metric_type": "COSINE", **self.index_spec()}
        self.connection.ensure_collection(self.collection, schema, "embedding", index)

    @property
    def index_type(self) -> str:
        if self.settings.index_type == "auto":
            return "FLAT" if self.embedded else "HNSW"
        return self.settings.index_type

    def index_spec(self) -> dict[str, Any]:
        s = self.settings
        if self.index_type == "HNSW":
            return {
                "index_type": "HNSW",
                "params": {"M": s.hnsw_m, "efConstruction": s.hnsw_ef_construction},
            }
        if self.index_type == "IVF_FLAT":
            return {"index_type": "IVF_FLAT", "params": {"nlist": s.ivf_nlist}}
        return {"index_type": self.index_type, "params": {}}

    def _search_params(self, limit: int) -> dict[str, int]:
        if self.index_type == "HNSW":
            return {"ef": max(self.settings.search_ef, limit)}
        if self.index_type == "IVF_FLAT":
            return {"nprobe": self.settings.ivf_nprobe}
        return {}


def _template_info(row: dict[str, Any]) -> TemplateInfo:
    return TemplateInfo(
        row["template_id"], float(row["quality"]), row["source"], int(row["created_at"])
    )
