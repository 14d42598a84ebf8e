"""Health (stock gRPC health client, no key) and the Prometheus metrics after real traffic."""

from __future__ import annotations

import re
import time

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from facegallery.assets.samples import Samples
from facegallery.client import GrpcClient, HttpClient
from tests.serving.conftest import METRICS_REFRESH_S, Served

pytestmark = pytest.mark.slow


def test_stock_grpc_health_check_passes(served: Served) -> None:
    with grpc.insecure_channel(served.grpc_target) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    assert httpx.get(f"{served.http_url}/v1/health").json()["status"] == "SERVING"


def _samples(text: str, name: str) -> dict[str, float]:
    """{labels: value} of one metric in a text exposition."""
    found = {}
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(\{{[^}}]*\}})? (\S+)", line)
        if match:
            found[match.group(1) or ""] = float(match.group(2))
    return found


def test_metrics_after_traffic(served: Served, samples: Samples) -> None:
    http = HttpClient(served.http_url, served.admin)
    grpc_client = GrpcClient(served.grpc_target, served.admin)
    gallery = "metrics"
    http.wait_job(http.enroll(gallery, "obama", [samples.photo("obama.jpg")]).job_id)
    for _ in range(3):
        http.identify(gallery, samples.photo("obama2.jpg"))  # matched
        grpc_client.identify(gallery, samples.photo("grace_hopper.jpg"))  # unknown
    with pytest.raises(Exception, match="image"):
        http.detect(b"junk")
    refused = '{code="INVALID_ARGUMENT",operation="verify",protocol="http"}'
    headers = {"authorization": f"Bearer {served.admin}", "content-type": "application/json"}
    before = _samples(httpx.get(served.metrics_url).text, "facegallery_requests_total")
    url = f"{served.http_url}/v1/galleries/{gallery}/users/obama/verify"
    assert httpx.post(url, content=b"{not json", headers=headers).status_code == 400

    time.sleep(METRICS_REFRESH_S)  # the gallery gauges are read again on the next scrape
    text = httpx.get(served.metrics_url).text  # the node's exporter, no API call
    requests = _samples(text, "facegallery_requests_total")
    # A body refused before the API call is counted too:
    assert requests[refused] == before.get(refused, 0) + 1
    assert requests['{code="OK",operation="identify",protocol="http"}'] >= 3
    assert requests['{code="OK",operation="identify",protocol="grpc"}'] >= 3
    assert requests['{code="INVALID_ARGUMENT",operation="detect",protocol="http"}'] >= 1
    stages = _samples(text, "facegallery_stage_seconds_count")
    for stage in ("decode", "detect", "align", "embed", "search", "upsert"):
        assert stages[f'{{stage="{stage}"}}'] >= 1, stage
    batches = _samples(text, "facegallery_batch_size_count")
    assert batches['{deployment="detector"}'] >= 7 and batches['{deployment="embedder"}'] >= 7
    faces = _samples(text, "facegallery_identify_faces_total")
    assert faces[f'{{decision="matched",gallery="{gallery}"}}'] >= 3
    assert faces[f'{{decision="unknown",gallery="{gallery}"}}'] >= 3
    assert _samples(text, "facegallery_identify_best_score_count")[""] >= 6
    assert _samples(text, "facegallery_jobs_total")['{outcome="done"}'] >= 1
    enrolled = _samples(text, "facegallery_enroll_images_total")
    assert enrolled['{reason="",status="enrolled"}'] >= 1
    queue = _samples(text, "facegallery_queue_jobs")
    assert set(queue) == {f'{{state="{s}"}}' for s in ("unfinished", "pending", "dead_letters")}
    assert all(v >= 0 for v in queue.values())
    size = _samples(text, "facegallery_gallery_size")
    assert size[f'{{gallery="{gallery}",kind="users"}}'] == 1
    assert size[f'{{gallery="{gallery}",kind="templates"}}'] == 1
    latency = _samples(text, "facegallery_request_seconds_sum")
    assert 0 < latency['{code="OK",operation="identify"}'] < 60


def test_metrics_are_on_the_operators_port_only_and_scrapes_cost_nothing_extra(
    served: Served, samples: Samples
) -> None:
    gallery = "tenant-secret"
    http = HttpClient(served.http_url, served.admin)
    http.identify(gallery, samples.photo("obama2.jpg"))
    # The API's port has no metrics, for anybody: a tenant's series never reach it.
    for headers in ({}, {"x-api-key": served.admin}):
        assert httpx.get(f"{served.http_url}/metrics", headers=headers).status_code == 404
    exported = httpx.get(served.metrics_url)
    assert exported.status_code == 200
    assert f'gallery="{gallery}"' in exported.text

    def depth_reads() -> int:  # the gauges' queue reads (XLEN, which only they send)
        stats = served.keys.redis.info("commandstats").get("cmdstat_xlen", {})
        return int(stats.get("calls", 0))

    time.sleep(METRICS_REFRESH_S)
    before, start = depth_reads(), time.monotonic()
    for _ in range(20):
        httpx.get(served.metrics_url)
    refreshes = 1 + int((time.monotonic() - start) / METRICS_REFRESH_S)
    assert depth_reads() - before <= refreshes < 20  # one read per refresh, not per scrape
