"""The node's metrics exporter: one per Ray node, beside its raylet (`facegallery serve
metrics`), on ``serving.metrics_port``; Prometheus scrapes every node's.

Every Ray worker of a node (Serve's proxies, the replicas) writes its samples to the node's
metrics directory (prometheus_client's multiprocess mode; the node's environment names the
directory, `facegallery.serving.app.ray_env`), and the exporter serves their sum. Two other
ways were tried or weighed and left:

- the gateway's ``/metrics`` route, through Serve's proxy: the proxy sends a request to a
  replica on its own node when there is one and to another node's otherwise, so a node with
  no gateway (a GPU node running the Embedder) was never exported and another node's series
  were scraped twice;
- Ray's per-node metrics agent (``--metrics-export-port``): it exports only what is recorded
  through ``ray.util.metrics`` (every metric redefined in Ray's API, its names prefixed, a
  series per worker process), so prometheus_client's histograms and the proxies' counters
  would be rewritten for one exporter that already exists per node. It still serves Ray's
  own metrics, which a cluster's Prometheus may scrape beside these.

The port is an operator's, never the API's: no key is asked, and the per-tenant series
(gallery ids) are served here and nowhere else.

The queue and gallery gauges come from exactly one exporter of the cluster (the head's,
``--gauges``): read from Redis and Milvus when scraped, at most every
``serving.metrics_refresh_s``, and written into that node's directory like a replica's
samples, so they are fresh without any API call and appear once however many nodes there are.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, multiprocess, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from facegallery.core.config import Settings
from facegallery.core.errors import as_error
from facegallery.core.telemetry import GALLERY_SIZE, QUEUE_JOBS, QUEUE_OLDEST_SECONDS
from facegallery.gallery import Gallery
from facegallery.jobs.queue import EnrollmentQueue
from facegallery.vision.pipeline import configured_embedding

log = logging.getLogger(__name__)


class ClusterGauges:
    """The enrollment queue's depth and every enrolled gallery's size, read at most every
    ``serving.metrics_refresh_s`` (scraping in a loop costs Redis and Milvus nothing more).
    The gallery is opened on the first read, not at start: an exporter starts, and serves its
    node's other series, while Milvus is still away."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.queue = EnrollmentQueue(settings.queue, settings.decode)
        self.gallery: Gallery | None = None
        self.read_at = -math.inf
        self.lock = threading.Lock()

    def refresh(self) -> None:
        """Set the gauges when they are older than ``metrics_refresh_s``; whatever fails
        (Redis or Milvus away, the models not prepared) is logged, and the scrape answers
        with what it has."""
        with self.lock:
            now = time.monotonic()
            if now - self.read_at < self.settings.serving.metrics_refresh_s:
                return
            self.read_at = now
            try:
                self._read()
            except Exception as exc:
                log.warning("metrics: queue and gallery gauges not read: %s", as_error(exc).message)

    def _read(self) -> None:
        depth = self.queue.depth()
        QUEUE_JOBS.labels("unfinished").set(depth.unfinished)
        QUEUE_JOBS.labels("pending").set(depth.pending)
        QUEUE_JOBS.labels("dead_letters").set(depth.dead_letters)
        QUEUE_OLDEST_SECONDS.labels(self.settings.queue.prefix).set(depth.oldest_s)
        if self.gallery is None:
            model_id, dimension = configured_embedding(self.settings)
            self.gallery = Gallery(self.settings.gallery, model_id, dimension)
        for name in self.queue.galleries():
            stats = self.gallery.stats(name)
            GALLERY_SIZE.labels(name, "users").set(stats.users)
            GALLERY_SIZE.labels(name, "templates").set(stats.templates)


class NodeMetrics(Collector):
    """The sum of the node's metrics directory, the gauges refreshed first where this
    exporter owns them."""

    def __init__(self, metrics_dir: Path, gauges: ClusterGauges | None) -> None:
        self.metrics_dir = metrics_dir
        self.gauges = gauges

    def collect(self) -> Iterable[Metric]:
        """Read at each scrape: the files of processes started since are included."""
        if self.gauges is not None:
            self.gauges.refresh()
        node = multiprocess.MultiProcessCollector(None, path=str(self.metrics_dir))  # type: ignore[no-untyped-call]
        return node.collect()  # type: ignore[no-untyped-call,no-any-return]


def serve_metrics(
    settings: Settings,
    metrics_dir: Path,
    host: str,
    port: int,
    gauges: bool,
    stop: threading.Event,
) -> None:
    """Serve ``GET /metrics`` on ``host``:``port`` until ``stop`` is set. The
    process must run prometheus_client's multiprocess mode on ``metrics_dir`` (its caller
    sets the variable before the first import), so that its gauges join the node's sum."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeMetrics(metrics_dir, ClusterGauges(settings) if gauges else None))
    server, thread = start_http_server(port, host, registry)
    try:
        stop.wait()
    finally:
        server.shutdown()
        thread.join()
