"""The enrollment queue on Redis Streams: submit, status, wait; and what workers call.

A job is a hash (``<p>:job:<id>``: gallery, user, status, per-image outcomes, attempts,
timestamps) beside a hash of its images (``<p>:job:<id>:images``), and one entry in the
stream ``<p>:jobs`` read by the consumer group ``workers``. Everything that can be checked
without models (ids, image count, each image's bytes, format and declared size from its
header, the job's total size) is checked at ``submit``, so a bad job is refused at once.

Submitting is one Lua script, so the capacity check, the idempotency key, the job, its
images and the stream entry are written together or not at all; with the managed Redis's
``appendfsync always`` the reply comes only after they are fsynced (acknowledged = durable).
Finishing a job is one script too: the outcome, the ack, freeing the images and the
counters change together, at most once, so a job reclaimed from a slow worker cannot be
counted twice. A full queue (jobs or image bytes) answers ``Overloaded`` with a retry hint.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import redis

from facegallery.core import ids
from facegallery.core.config import DecodeSettings, QueueSettings
from facegallery.core.errors import (
    AlreadyExists,
    FaceGalleryError,
    FailedPrecondition,
    InvalidInput,
    NotFound,
    Overloaded,
    Unavailable,
    as_error,
    redacted,
)
from facegallery.service.enrollment import EnrollResult, ImageInput
from facegallery.vision.decode import check_image_header
from facegallery.wire.idempotency import payload_hash

JobStatus = Literal["queued", "running", "done", "failed"]
GROUP = "workers"
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@/+=-]{0,127}")
_NAME_MAX = 256

_SUBMIT = """
local job_key, images_key, stream, unfinished, held = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local idem_key, owner_jobs, owner_bytes, galleries = KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local job_id, payload, max_jobs, max_bytes, nbytes, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]),
  tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local nfields = tonumber(ARGV[7])
local owner, owner_max_jobs, owner_max_bytes = ARGV[8], tonumber(ARGV[9]), tonumber(ARGV[10])
if idem_key ~= job_key then
  local existing = redis.call('GET', idem_key)
  if existing then
    local prior = redis.call('HGET', ARGV[11 + nfields * 2] .. existing, 'payload_hash')
    if prior == payload then return {'existing', existing} end
    return {'conflict', existing}
  end
end
if tonumber(redis.call('GET', unfinished) or '0') >= max_jobs then return {'full', 'jobs'} end
if tonumber(redis.call('GET', held) or '0') + nbytes > max_bytes then return {'full', 'bytes'} end
if owner ~= '' then
  if tonumber(redis.call('HGET', owner_jobs, owner) or '0') >= owner_max_jobs then
    return {'quota', 'jobs'}
  end
  if tonumber(redis.call('HGET', owner_bytes, owner) or '0') + nbytes > owner_max_bytes then
    return {'quota', 'bytes'}
  end
  redis.call('HINCRBY', owner_jobs, owner, 1)
  redis.call('HINCRBY', owner_bytes, owner, nbytes)
end
for i = 0, nfields - 1 do
  redis.call('HSET', job_key, ARGV[11 + i * 2], ARGV[12 + i * 2])
end
local first_image = 11 + nfields * 2 + 1
for i = first_image, #ARGV, 2 do
  redis.call('HSET', images_key, ARGV[i], ARGV[i + 1])
end
if idem_key ~= job_key then redis.call('SET', idem_key, job_id, 'EX', ttl) end
redis.call('XADD', stream, '*', 'job', job_id)
redis.call('INCR', unfinished)
redis.call('INCRBY', held, nbytes)
redis.call('SADD', galleries, redis.call('HGET', job_key, 'gallery'))
return {'created', job_id}
"""

_FINISH = """
local job_key, images_key, stream, unfinished, held, dead = KEYS[1], KEYS[2], KEYS[3], KEYS[4],
  KEYS[5], KEYS[6]
local owner_jobs, owner_bytes = KEYS[7], KEYS[8]
local entry, status, ttl, now = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
redis.call('XACK', stream, 'workers', entry)
redis.call('XDEL', stream, entry)
local current = redis.call('HGET', job_key, 'status')
if current == 'done' or current == 'failed' or not current then return 0 end
for i = 5, #ARGV, 2 do redis.call('HSET', job_key, ARGV[i], ARGV[i + 1]) end
redis.call('HSET', job_key, 'status', status, 'finished_at', now)
local nbytes = tonumber(redis.call('HGET', job_key, 'bytes') or '0')
redis.call('DEL', images_key)
redis.call('DECR', unfinished)
redis.call('DECRBY', held, nbytes)
local owner = redis.call('HGET', job_key, 'owner')
if owner and owner ~= '' then
  redis.call('HINCRBY', owner_jobs, owner, -1)
  redis.call('HINCRBY', owner_bytes, owner, -nbytes)
end
redis.call('EXPIRE', job_key, ttl)
if status == 'failed' then
  redis.call('XADD', dead, '*', 'job', redis.call('HGET', job_key, 'job_id'),
    'reason', redis.call('HGET', job_key, 'error') or '')
end
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_HEARTBEAT = """
local lease, stream, token, ttl, entry, consumer = KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3],
  ARGV[4]
if redis.call('GET', lease) ~= token then return 0 end
local owner = redis.call('XPENDING', stream, 'workers', entry, entry, 1)
if #owner == 0 or owner[1][2] ~= consumer then return 0 end
redis.call('PEXPIRE', lease, ttl)
redis.call('XCLAIM', stream, 'workers', consumer, 0, entry, 'JUSTID')
return 1
"""


@dataclass(frozen=True)
class Job:
    """An enrollment job as its caller sees it. ``outcomes``: one per image, in order
    (``EnrollOutcome.to_dict()``), once the job is done."""

    job_id: str
    gallery: str
    user_id: str
    status: JobStatus
    images: list[str]
    attempts: int
    created_at: float
    face_index: int | None = None
    idempotency_key: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
    outcomes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed")

    def to_dict(self) -> dict[str, object]:
        return {
            "job_id": self.job_id,
            "gallery": self.gallery,
            "user_id": self.user_id,
            "status": self.status,
            "images": self.images,
            "attempts": self.attempts,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "idempotency_key": self.idempotency_key,
            "error": self.error,
            "result": self.result,
            "outcomes": self.outcomes,
        }


@dataclass(frozen=True)
class Delivery:
    """A stream entry handed to a worker: which job, and how often it has been delivered."""

    entry_id: str
    job_id: str
    deliveries: int


@dataclass(frozen=True)
class Lease:
    """A per-user lease held by one worker (the token proves whose it is)."""

    key: str
    token: str


@dataclass(frozen=True)
class QueueDepth:
    unfinished: int
    pending: int
    dead_letters: int
    held_bytes: int
    oldest_s: float = 0.0  # how long the oldest entry in the stream has waited (0: none)


class EnrollmentQueue:
    """Submit and follow enrollment jobs; claim, finish and retry them (workers)."""

    def __init__(
        self, settings: QueueSettings, limits: DecodeSettings, client: redis.Redis | None = None
    ) -> None:
        self.settings = settings
        self.limits = limits
        self.redis = client or redis.Redis.from_url(settings.url, socket_timeout=10)
        p = settings.prefix
        self.stream, self.dead = f"{p}:jobs", f"{p}:dead"
        self._unfinished, self._held = f"{p}:unfinished", f"{p}:held-bytes"
        self._owner_jobs, self._owner_bytes = f"{p}:owner-jobs", f"{p}:owner-bytes"
        self._galleries = f"{p}:galleries"
        self._submit = self.redis.register_script(_SUBMIT)
        self._finish = self.redis.register_script(_FINISH)
        self._release = self.redis.register_script(_RELEASE)
        self._heartbeat = self.redis.register_script(_HEARTBEAT)
        self._group_ready = False

    def submit(
        self,
        gallery: str,
        user_id: str,
        images: list[ImageInput],
        idempotency_key: str | None = None,
        face_index: int | None = None,
        owner: str = "",
    ) -> Job:
        """Validate and queue a job; returns once Redis holds it (durably, with fsync
        always). The same idempotency key returns the original job; the same key with
        another payload is ``AlreadyExists``. An ``owner`` (the API key that submits it)
        may hold at most ``owner_share`` of the queue's jobs and image bytes, so that one
        caller cannot fill the queue for everybody."""
        gallery, user_id, data, payload = checked_submission(
            gallery, user_id, images, idempotency_key, face_index, self.settings, self.limits
        )
        job_id = uuid.uuid4().hex
        nbytes = sum(len(d) for d in data)
        now = time.time()
        fields: dict[str, str] = {
            "job_id": job_id,
            "gallery": gallery,
            "user_id": user_id,
            "status": "queued",
            "images": json.dumps([i.name for i in images]),
            "attempts": "0",
            "created_at": repr(now),
            "face_index": "" if face_index is None else str(face_index),
            "idempotency_key": idempotency_key or "",
            "payload_hash": payload,
            "bytes": str(nbytes),
            "owner": owner,
        }
        job_key = self._job_key(job_id)
        idem_key = job_key if idempotency_key is None else self._idem_key(gallery, idempotency_key)
        args: list[Any] = [
            job_id,
            payload,
            self.settings.max_queued_jobs,
            self.settings.max_queued_bytes,
            nbytes,
            self.settings.job_ttl_s,
            len(fields),
            owner,
            max(1, int(self.settings.max_queued_jobs * self.settings.owner_share)),
            max(1, int(self.settings.max_queued_bytes * self.settings.owner_share)),
        ]
        for name, value in fields.items():
            args += [name, value]
        args.append(f"{self.settings.prefix}:job:")  # the job-key prefix, for the idem check
        for index, content in enumerate(data):
            args += [str(index), content]
        keys = [job_key, self._images_key(job_id), self.stream, self._unfinished, self._held]
        owners = [self._owner_jobs, self._owner_bytes]
        keys += [idem_key, *owners, self._galleries]
        answer = self._redis(self._submit, keys=keys, args=args)
        verdict, value = (v.decode() for v in answer)
        if verdict == "existing":
            return self.get(value)
        if verdict == "conflict":
            raise AlreadyExists(
                f"idempotency key {idempotency_key!r} was used for another enrollment "
                f"(job {value}); use a new key for a different request"
            )
        if verdict in ("full", "quota"):
            what = "jobs" if value == "jobs" else "image bytes"
            whose = "is full" if verdict == "full" else "holds this API key's share"
            raise Overloaded(
                f"the enrollment queue {whose} of unfinished {what}; retry in "
                f"{self.settings.retry_after_s} s",
                retry_after_s=self.settings.retry_after_s,
            )
        return job_from_fields(fields)  # what the script just stored, without reading it back

    def galleries(self) -> list[str]:
        """Every gallery a job was queued for: what the gallery-size gauges cover (Milvus
        has no list of the galleries a collection holds short of reading every row)."""
        return sorted(g.decode() for g in self._redis(self.redis.smembers, self._galleries))

    def get(self, job_id: str) -> Job:
        """A job's status and outcomes; ``NotFound`` when unknown or expired."""
        job_id = ids.job_id(job_id)
        raw = self._redis(self.redis.hgetall, self._job_key(job_id))
        if not raw:
            raise NotFound(f"job {job_id} does not exist (or finished and expired)")
        return job_from_fields({k.decode(): v.decode() for k, v in raw.items()})

    def wait(self, job_id: str, timeout_s: float, poll_s: float = 0.05) -> Job:
        """The job once it is finished, or as it stands after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.get(job_id)
            if job.finished or time.monotonic() >= deadline:
                return job
            time.sleep(poll_s)

    def depth(self) -> QueueDepth:
        """Unfinished jobs, entries pending in the group, dead letters, held image bytes."""
        self._ensure_group_once()
        pending = self._redis(self.redis.xpending, self.stream, GROUP)
        oldest = self._redis(self.redis.xrange, self.stream, count=1)
        # An entry's id starts with the Redis clock's milliseconds when it was added (a job
        # handed back is a new entry: its age starts again).
        added_ms = int(oldest[0][0].split(b"-")[0]) if oldest else None
        now_s, _ = self._redis(self.redis.time)
        return QueueDepth(
            unfinished=int(self._redis(self.redis.get, self._unfinished) or 0),
            pending=int(pending["pending"]),
            dead_letters=int(self._redis(self.redis.xlen, self.dead)),
            held_bytes=int(self._redis(self.redis.get, self._held) or 0),
            oldest_s=0.0 if added_ms is None else max(0.0, now_s - added_ms / 1000),
        )

    def dead_letters(self, count: int = 100) -> list[tuple[str, str]]:
        """The oldest dead-lettered jobs: (job id, reason)."""
        entries = self._redis(self.redis.xrange, self.dead, count=count) or []
        return [(v[b"job"].decode(), v[b"reason"].decode()) for _, v in entries]

    def ensure_durable(self) -> None:
        """Refuse a Redis that could lose an acknowledged job: the append-only file must be
        on, fsynced at least as often as ``queue.appendfsync`` (``always``: before each
        reply; ``everysec`` only when chosen). The gateway and every worker check at start."""
        try:
            config = self.redis.config_get("append*")
        except redis.ResponseError as exc:
            raise FailedPrecondition(
                f"cannot read the persistence settings of Redis at {redacted(self.settings.url)} "
                f"({exc}): allow CONFIG GET for this client, since enrollment needs "
                f"appendonly yes with appendfsync {self.settings.appendfsync} to keep what it "
                "acknowledges"
            ) from exc
        except redis.RedisError as exc:
            raise self._unreachable(exc) from exc
        aof = config.get("appendonly", "no")
        fsync = config.get("appendfsync", "no")
        wanted = self.settings.appendfsync
        good = {"always"} if wanted == "always" else {"always", "everysec"}
        if aof != "yes" or fsync not in good:
            raise FailedPrecondition(
                f"Redis at {redacted(self.settings.url)} has appendonly {aof}, appendfsync "
                f"{fsync}: an acknowledged enrollment job could be lost. Run it with "
                f"`--appendonly yes --appendfsync {wanted}` (or CONFIG SET appendonly yes, "
                f"CONFIG SET appendfsync {wanted}), or point queue.url at one that does"
            )

    # The worker's side.

    def ensure_group(self) -> None:
        try:
            self.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise Unavailable(f"Redis refused to create the consumer group: {exc}") from exc
        except redis.RedisError as exc:
            raise self._unreachable(exc) from exc

    def _ensure_group_once(self) -> None:
        if not self._group_ready:
            self.ensure_group()
            self._group_ready = True

    def claim(self, consumer: str, block_ms: int) -> Delivery | None:
        """The next job for ``consumer``: first one a dead worker left pending for longer
        than ``claim_idle_ms``, else a new one (waiting up to ``block_ms``)."""
        self._ensure_group_once()
        _, claimed, *_ = self._redis(
            self.redis.xautoclaim,
            self.stream,
            GROUP,
            consumer,
            min_idle_time=self.settings.claim_idle_ms,
            start_id="0-0",
            count=1,
        )
        entries = [e for e in claimed if e[1]]  # entries deleted meanwhile come back empty
        if not entries:
            read = self._redis(
                self.redis.xreadgroup, GROUP, consumer, {self.stream: ">"}, count=1, block=block_ms
            )
            entries = read[0][1] if read else []
        if not entries:
            return None
        entry_id, values = entries[0]
        entry = entry_id.decode()
        info = self._redis(self.redis.xpending_range, self.stream, GROUP, entry, entry, 1)
        count = int(info[0]["times_delivered"]) if info else 1
        return Delivery(entry, values[b"job"].decode(), count)

    def images(self, job: Job) -> list[ImageInput]:
        """A job's images, named as submitted."""
        raw = self._redis(self.redis.hgetall, self._images_key(job.job_id))
        return [ImageInput(name, raw[str(i).encode()]) for i, name in enumerate(job.images)]

    def mark_running(self, job_id: str, consumer: str, attempt: int) -> None:
        self._redis(
            self.redis.hset,
            self._job_key(job_id),
            mapping={
                "status": "running",
                "error": "",  # a worker that dies now leaves "running" with no error
                "worker": consumer,
                "attempts": str(attempt),
                "started_at": repr(time.time()),
            },
        )

    def note_lost_worker(self, job_id: str) -> int:
        """Count one more worker that died running this job; how many have."""
        return int(self._redis(self.redis.hincrby, self._job_key(job_id), "lost_workers", 1))

    def complete(self, delivery: Delivery, result: EnrollResult) -> bool:
        """Record the outcome and acknowledge; False when the job was already finished."""
        summary = {k: v for k, v in result.to_dict().items() if k != "images"}
        return self._finish_job(
            delivery,
            "done",
            {
                "result": json.dumps(summary),
                "outcomes": json.dumps([o.to_dict() for o in result.outcomes]),
                "error": "",
            },
        )

    def acknowledge(self, delivery: Delivery) -> None:
        """Drop an entry whose job is already finished (or expired): no outcome changes."""
        self._finish_job(delivery, "done", {})

    def fail(self, delivery: Delivery, reason: str) -> bool:
        """Give up: the job shows ``failed`` with the reason and goes to the dead letters."""
        return self._finish_job(delivery, "failed", {"error": reason})

    def retry_later(self, delivery: Delivery, error: FaceGalleryError | Exception) -> None:
        """Leave the entry pending (another delivery after ``claim_idle_ms``), noting why."""
        message = as_error(error).message  # one line, a reference to the log for the rest
        self._redis(
            self.redis.hset,
            self._job_key(delivery.job_id),
            mapping={"status": "queued", "error": message},
        )

    def waits_for_service(self, job_id: str) -> bool:
        """Whether the job may still be handed back for free because the service (not the
        job) failed: since the first such try, less than ``service_wait_s`` has passed."""
        key, now = self._job_key(job_id), time.time()
        self._redis(self.redis.hsetnx, key, "service_wait_since", repr(now))
        since = float(self._redis(self.redis.hget, key, "service_wait_since") or now)
        return now - since < self.settings.service_wait_s

    def requeue(self, delivery: Delivery) -> None:
        """Hand the job back as a fresh entry (its user was busy), without using up one of
        its deliveries."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._job_key(delivery.job_id), "status", "queued")
            pipe.xadd(self.stream, {"job": delivery.job_id})
            pipe.xack(self.stream, GROUP, delivery.entry_id)
            pipe.xdel(self.stream, delivery.entry_id)
            self._redis(pipe.execute)

    @contextmanager
    def user_lease(self, gallery: str, user_id: str, wait_s: float = 5.0) -> Iterator[Lease | None]:
        """Hold the per-user lease while enrolling (None if it stayed taken for ``wait_s``).

        It lasts ``claim_idle_ms``, like an unacknowledged entry: a dead worker's lease is
        gone by the time its job is claimed. A live worker keeps both with ``heartbeat``."""
        lease = Lease(f"{self.settings.prefix}:lease:{gallery}:{user_id}", uuid.uuid4().hex)
        deadline = time.monotonic() + wait_s
        while not self._redis(
            self.redis.set, lease.key, lease.token, nx=True, px=self.settings.claim_idle_ms
        ):
            if time.monotonic() >= deadline:
                yield None
                return
            time.sleep(0.05)
        try:
            yield lease
        finally:
            self._redis(self._release, keys=[lease.key], args=[lease.token])

    def heartbeat(self, consumer: str, delivery: Delivery, lease: Lease) -> bool:
        """Keep a long job ours: renew the lease and reset the entry's idle time (XCLAIM
        with JUSTID does not count a delivery), both only while they are still ours. False:
        the lease lapsed or another worker claimed the entry, so this one must stop."""
        args = [lease.token, self.settings.claim_idle_ms, delivery.entry_id, consumer]
        return bool(self._redis(self._heartbeat, keys=[lease.key, self.stream], args=args))

    def holds(self, lease: Lease) -> bool:
        """Whether ``lease`` is still this worker's (the fence before every write)."""
        return bool(self._redis(self.redis.get, lease.key) == lease.token.encode())

    def _finish_job(self, delivery: Delivery, status: JobStatus, fields: dict[str, str]) -> bool:
        keys = [
            self._job_key(delivery.job_id),
            self._images_key(delivery.job_id),
            self.stream,
            self._unfinished,
            self._held,
            self.dead,
            self._owner_jobs,
            self._owner_bytes,
        ]
        args: list[Any] = [delivery.entry_id, status, self.settings.job_ttl_s, repr(time.time())]
        for name, value in fields.items():
            args += [name, value]
        return bool(self._redis(self._finish, keys=keys, args=args))

    def _unreachable(self, exc: Exception) -> Unavailable:
        return Unavailable(f"Redis at {redacted(self.settings.url)} is not reachable: {exc}")

    def _job_key(self, job_id: str) -> str:
        return f"{self.settings.prefix}:job:{job_id}"

    def _images_key(self, job_id: str) -> str:
        return f"{self.settings.prefix}:job:{job_id}:images"

    def _idem_key(self, gallery: str, key: str) -> str:
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        return f"{self.settings.prefix}:idem:{gallery}:{digest}"

    def _redis(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return call(*args, **kwargs)
        except redis.ResponseError as exc:
            if "OOM" in str(exc):
                raise Overloaded(
                    f"Redis is out of memory; retry in {self.settings.retry_after_s} s",
                    retry_after_s=self.settings.retry_after_s,
                ) from exc
            raise Unavailable(f"Redis refused a command: {exc}") from exc
        except redis.RedisError as exc:
            raise self._unreachable(exc) from exc


def checked_submission(
    gallery: str,
    user_id: str,
    images: list[ImageInput],
    idempotency_key: str | None,
    face_index: int | None,
    settings: QueueSettings,
    limits: DecodeSettings,
) -> tuple[str, str, list[bytes], str]:
    """What every submit (the queue's, the inline jobs') checks first: the ids, the images
    (`validated_images`); returns the ids, the images' bytes and the payload's hash (what a
    reused idempotency key is compared by)."""
    gallery, user_id = ids.gallery_id(gallery), ids.user_id(user_id)
    data = validated_images(images, idempotency_key, face_index, settings, limits)
    named = [(image.name, content) for image, content in zip(images, data, strict=True)]
    return gallery, user_id, data, payload_hash(gallery, user_id, named, face_index)


def validated_images(
    images: list[ImageInput],
    idempotency_key: str | None,
    face_index: int | None,
    settings: QueueSettings,
    limits: DecodeSettings,
) -> list[bytes]:
    """Every check of an enrollment that needs no model (the queue's and the inline jobs');
    returns the images' bytes."""
    if not images:
        raise InvalidInput("enrollment needs at least one image")
    if len(images) > settings.max_images_per_job:
        raise InvalidInput(
            f"{len(images)} images in one job; at most {settings.max_images_per_job}"
        )
    if face_index is not None and face_index < 0:
        raise InvalidInput(f"face_index must be 0 or more, got {face_index}")
    if idempotency_key is not None and not _KEY.fullmatch(str(idempotency_key)):
        raise InvalidInput(
            "invalid idempotency key: 1-128 characters of A-Z a-z 0-9 _ . : @ / + = -"
        )
    data = []
    for image in images:
        if not image.name or len(image.name) > _NAME_MAX:
            raise InvalidInput(f"image names must be 1-{_NAME_MAX} characters")
        try:
            check_image_header(image.data, limits)  # bytes only, from here on
        except FaceGalleryError as exc:
            raise type(exc)(f"{image.name}: {exc.message}") from exc
        data.append(bytes(cast(bytes, image.data)))
    total = sum(len(d) for d in data)
    if total > settings.max_job_bytes:
        raise InvalidInput(
            f"the job's images hold {total:,} bytes; at most "
            f"{settings.max_job_bytes:,} per job (split it into several jobs)"
        )
    return data


def job_from_fields(f: dict[str, str]) -> Job:
    """A job from its stored fields (the queue's Redis hash, the inline jobs' rows)."""

    def number(name: str) -> float | None:
        return float(f[name]) if f.get(name) else None

    return Job(
        job_id=f["job_id"],
        gallery=f["gallery"],
        user_id=f["user_id"],
        status=cast(JobStatus, f["status"]),
        images=json.loads(f["images"]),
        attempts=int(f.get("attempts") or 0),
        created_at=float(f["created_at"]),
        face_index=int(f["face_index"]) if f.get("face_index") else None,
        idempotency_key=f.get("idempotency_key") or None,
        started_at=number("started_at"),
        finished_at=number("finished_at"),
        error=f.get("error") or None,
        result=json.loads(f["result"]) if f.get("result") else None,
        outcomes=json.loads(f["outcomes"]) if f.get("outcomes") else [],
    )
