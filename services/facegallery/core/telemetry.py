"""Every metric, defined once: names, labels, buckets. docs/operations.md lists them.

Served, Serve's proxies and the Gateway, Detector, Embedder and worker replicas are separate
processes. They run prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, which
the node's environment names for every Ray worker): each process writes its samples to
memory-mapped files in that directory and the node's exporter (`facegallery.serving.exporter`)
serves their sum. In process (CLI) the same metrics land in the default registry. Labels are
bounded: operation, status code, stage, deployment, gallery, decision, reason; never a user id.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from facegallery.core.config import METRICS_DIR_ENV, NODE_METRICS_DIR_ENV

if os.environ.get(METRICS_DIR_ENV):  # a fresh node (or `serve deploy`) has no directory yet
    Path(os.environ[METRICS_DIR_ENV]).mkdir(parents=True, exist_ok=True)
elif METRICS_DIR_ENV in os.environ:
    # A replica on a node started without the node's directory: Ray expanded the reference
    # to nothing. Removed before prometheus_client reads it (it would take the empty string
    # for the working directory and write there).
    del os.environ[METRICS_DIR_ENV]
    logging.getLogger(__name__).warning(
        "this node was started without %s (`facegallery serve env`): the metrics of this "
        "process are not exported",
        NODE_METRICS_DIR_ENV,
    )

from prometheus_client import Counter, Gauge, Histogram  # read after the environment above

_LATENCY = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128)

REQUESTS = Counter(
    "facegallery_requests_total",
    "API calls by operation, protocol and status code (OK, INVALID_ARGUMENT, ...).",
    ["operation", "protocol", "code"],
)
REQUEST_SECONDS = Histogram(
    "facegallery_request_seconds",
    "API call latency in the gateway, by operation and status code.",
    ["operation", "code"],
    buckets=_LATENCY,
)
STAGE_SECONDS = Histogram(
    "facegallery_stage_seconds",
    "Time per pipeline stage call: decode, detect, align, embed (per batch), search, upsert.",
    ["stage"],
    buckets=_LATENCY,
)
BATCH_SIZE = Histogram(
    "facegallery_batch_size",
    "Batch sizes the deployments ran: images (detector), faces (embedder).",
    ["deployment"],
    buckets=_BATCH,
)
SHED = Counter(
    "facegallery_shed_total",
    "Work dropped before it cost CPU or a batch slot, by why (expired: its deadline passed; "
    "cancelled: its caller left; admission: refused at the door, the expected wait being "
    "longer than the call's deadline) and where (proxy, gateway, detector, embedder, gallery).",
    ["reason", "stage"],
)
ADMITTED = Counter(
    "facegallery_admitted_total",
    "Calls admission let in, by priority (interactive) and where (proxy: the single-image "
    "calls, at Serve's proxy; gateway: every model call, by images).",
    ["priority", "stage"],
)
EXPECTED_WAIT_SECONDS = Gauge(
    "facegallery_expected_wait_seconds",
    "Admission's estimate of the queueing time a new call would meet (the largest over the "
    "node's proxy and gateway replicas).",
    multiprocess_mode="max",
)
FACES_PER_IMAGE = Histogram(
    "facegallery_faces_per_image",
    "Faces the detector found per image.",
    buckets=(0, 1, 2, 3, 5, 10, 20, 50),
)
IDENTIFY_FACES = Counter(
    "facegallery_identify_faces_total",
    "Searched faces by gallery and decision (matched / unknown): the match rate is "
    'rate(...{decision="matched"}) / rate(...).',
    ["gallery", "decision"],
)
BEST_SCORE = Histogram(
    "facegallery_identify_best_score",
    "Score of each searched face's best candidate (gallery.fusion: by default the mean "
    "cosine of the user's two best templates).",
    buckets=tuple(round(0.1 * i, 1) for i in range(-2, 11)),
)
ENROLL_IMAGES = Counter(
    "facegallery_enroll_images_total",
    "Enrollment images by outcome (enrolled / rejected) and rejection reason.",
    ["status", "reason"],
)
JOBS = Counter(
    "facegallery_jobs_total", "Enrollment jobs finished, by outcome (done / failed).", ["outcome"]
)
QUEUE_JOBS = Gauge(
    "facegallery_queue_jobs",
    "Enrollment queue: unfinished jobs, entries pending in the consumer group, dead letters.",
    ["state"],
    multiprocess_mode="mostrecent",
)
QUEUE_OLDEST_SECONDS = Gauge(
    "facegallery_queue_oldest_seconds",
    "How long the oldest enrollment job still in the stream has waited (0: none), by queue "
    "(its key prefix): a backlog that grows old is a stalled or too small worker pool.",
    ["queue"],  # labelled: a label-less gauge would appear, as 0, from every process
    multiprocess_mode="mostrecent",
)
GALLERY_SIZE = Gauge(
    "facegallery_gallery_size",
    "Users and templates per gallery (every gallery an enrollment job was queued for).",
    ["gallery", "kind"],
    multiprocess_mode="mostrecent",
)


@contextmanager
def timed(stage: str) -> Iterator[None]:
    """Observe the block's wall time as one ``stage`` sample."""
    start = time.perf_counter()
    try:
        yield
    finally:
        STAGE_SECONDS.labels(stage).observe(time.perf_counter() - start)
