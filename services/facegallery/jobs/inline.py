"""Enrollment jobs run in the call, for the in-process client: no Redis, no worker. A job is
finished when `submit` returns, and kept in a small SQLite file beside the gallery, so that
looking a job up and reusing an idempotency key behave as they do on the queue, across
processes: the same key with the same photos returns the first job (nothing is enrolled
twice), the same key with other photos is refused, and a job is forgotten
``queue.job_ttl_s`` after it finished."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from facegallery.core import ids
from facegallery.core.config import DecodeSettings, QueueSettings
from facegallery.core.errors import AlreadyExists, NotFound
from facegallery.jobs.queue import Job, QueueDepth, checked_submission, job_from_fields
from facegallery.service.enrollment import EnrollResult, ImageInput

Enroll = Callable[[str, str, list[ImageInput], int | None], EnrollResult]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    gallery TEXT NOT NULL,
    idempotency_key TEXT,
    payload_hash TEXT NOT NULL,
    finished_at REAL NOT NULL,
    fields TEXT NOT NULL,
    UNIQUE (gallery, idempotency_key)
)
"""


class InlineJobs:
    """The enrollment queue's `submit` / `get` / `depth`, run at once on ``enroll``."""

    def __init__(
        self, path: Path, settings: QueueSettings, limits: DecodeSettings, enroll: Enroll
    ) -> None:
        self.path = path
        self.settings = settings
        self.limits = limits
        self.enroll = enroll
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.execute(_SCHEMA)

    def submit(
        self,
        gallery: str,
        user_id: str,
        images: list[ImageInput],
        idempotency_key: str | None = None,
        face_index: int | None = None,
        owner: str = "",
    ) -> Job:
        """Validate as the queue does, enroll, and keep the finished job. ``owner`` is the
        queue's share holder; in process there is only one caller, so it is not used."""
        gallery, user_id, _, payload = checked_submission(
            gallery, user_id, images, idempotency_key, face_index, self.settings, self.limits
        )
        self._forget_expired()
        if idempotency_key is not None and (earlier := self._by_key(gallery, idempotency_key)):
            return self._same_or_refused(earlier, payload, idempotency_key)
        started = time.time()
        result = self.enroll(gallery, user_id, images, face_index)
        fields = {
            "job_id": uuid.uuid4().hex,
            "gallery": gallery,
            "user_id": user_id,
            "status": "done",
            "images": json.dumps([i.name for i in images]),
            "attempts": "1",
            "created_at": repr(started),
            "started_at": repr(started),
            "finished_at": repr(time.time()),
            "face_index": "" if face_index is None else str(face_index),
            "idempotency_key": idempotency_key or "",
            "result": json.dumps({k: v for k, v in result.to_dict().items() if k != "images"}),
            "outcomes": json.dumps([o.to_dict() for o in result.outcomes]),
        }
        try:
            with closing(self._connect()) as db, db:
                db.execute(
                    "INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        fields["job_id"],
                        gallery,
                        idempotency_key,
                        payload,
                        float(fields["finished_at"]),
                        json.dumps(fields),
                    ),
                )
        except sqlite3.IntegrityError:  # another process kept the same key first
            assert idempotency_key is not None
            earlier = self._by_key(gallery, idempotency_key)
            assert earlier is not None
            return self._same_or_refused(earlier, payload, idempotency_key)
        return job_from_fields(fields)

    def get(self, job_id: str) -> Job:
        job_id = ids.job_id(job_id)
        with closing(self._connect()) as db:
            row = db.execute(
                "SELECT fields FROM jobs WHERE job_id = ? AND finished_at > ?",
                (job_id, time.time() - self.settings.job_ttl_s),
            ).fetchone()
        if row is None:  # the queue's words: the command line reads the same on every transport
            raise NotFound(f"job {job_id} does not exist (or finished and expired)")
        return job_from_fields(json.loads(row[0]))

    def depth(self) -> QueueDepth:
        """Nothing ever waits: every job finished in its call."""
        return QueueDepth(unfinished=0, pending=0, dead_letters=0, held_bytes=0)

    def _forget_expired(self) -> None:
        with closing(self._connect()) as db, db:
            db.execute(
                "DELETE FROM jobs WHERE finished_at <= ?", (time.time() - self.settings.job_ttl_s,)
            )

    def _by_key(self, gallery: str, key: str) -> tuple[str, str] | None:
        with closing(self._connect()) as db:
            row = db.execute(
                "SELECT payload_hash, fields FROM jobs WHERE gallery = ? AND idempotency_key = ?",
                (gallery, key),
            ).fetchone()
        return None if row is None else (row[0], row[1])

    def _same_or_refused(self, earlier: tuple[str, str], payload: str, key: str) -> Job:
        job = job_from_fields(json.loads(earlier[1]))
        if earlier[0] != payload:
            raise AlreadyExists(
                f"idempotency key {key!r} was used for another enrollment (job {job.job_id}); "
                "use a new key for a different request"
            )
        return job

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)
