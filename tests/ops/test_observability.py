"""The end-to-end check of what operators watch: `facegallery up` and a real Prometheus
(Debian's) with the project's scrape configuration and rules (``deploy/prometheus/``). After
identify calls (known and unknown faces, HTTP and gRPC), enrollment jobs and refused calls,
every dashboard query and every recording rule returns data, the match rate Prometheus
computes is the one the answers gave, and every rule is healthy; a broken query, a misspelt
metric and a rule that fails as it runs are each shown to fail these checks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from facegallery.assets.samples import Samples
from facegallery.client import GrpcClient, HttpClient
from facegallery.core.errors import InvalidInput
from facegallery.wire.schemas import IdentifiedFace
from facegallery.wire.wording import UNKNOWN
from tests.ops.dashboard_module import DASHBOARD_JSON, as_sent
from tests.ops.dashboard_picture import draw
from tests.ops.test_dashboard import panel_queries
from tests.ops.test_prometheus_rules import RULES, rules
from tests.prometheus import SCRAPE_INTERVAL_S, PrometheusServer, QueryRefused
from tests.test_stack import facegallery, new_ports, stack_env

pytestmark = pytest.mark.slow

CONFIG = RULES.with_name("prometheus.yml")
GALLERY = "e2e"
WAIT_S = 120.0  # Ray's metrics agent reports every few seconds; the rules run every second


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    data_dir = tmp_path_factory.mktemp("observed") / "stack"
    env = stack_env(data_dir, new_ports())
    up = facegallery(env, "up", "--detach")
    assert up.returncode == 0, up.stderr + up.stdout
    try:
        yield env
    finally:
        facegallery(env, "down")


def project_config(env: dict[str, str], extra_rules: list[Path]) -> dict[str, Any]:
    """The committed configuration, pointed at this stack's ports, every second."""
    config: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(RULES), *map(str, extra_rules)]
    ports = {
        "facegallery": env["FACEGALLERY_SERVING__METRICS_PORT"],
        "ray": env["FACEGALLERY_SERVING__RAY_METRICS_PORT"],
    }
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [f"127.0.0.1:{ports[job['job_name']]}"]}]
    return config


@pytest.fixture(scope="module")
def prometheus(
    stack: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    server = PrometheusServer(tmp_path_factory.mktemp("prometheus"), project_config(stack, []))
    with server:
        yield server


@dataclass
class Tally:
    """Searched faces and those matched, as the API's answers said."""

    searched: int = 0
    matched: int = 0

    def add(self, faces: list[IdentifiedFace]) -> None:
        for face in faces:
            self.searched += face.searched
            self.matched += face.searched and face.decision != UNKNOWN

    @property
    def rate(self) -> float:
        return self.matched / self.searched


def traffic(
    env: dict[str, str], samples: Samples, prometheus: PrometheusServer
) -> tuple[Tally, Tally, float]:
    """Enrollment, identify calls of known and unknown faces, refused calls. Returns what
    the answers said in all, and after Prometheus had scraped each series once (a rate sees
    only the increases between the samples it has), and when that first scrape was."""
    key = (Path(env["FACEGALLERY_STACK__DATA_DIR"]) / "admin.key").read_text().strip()
    url = f"http://127.0.0.1:{env['FACEGALLERY_SERVING__HTTP_PORT']}"
    http = HttpClient(url, key)
    grpc = GrpcClient(f"127.0.0.1:{env['FACEGALLERY_SERVING__GRPC_PORT']}", key)
    for user, photo in (("obama", "obama.jpg"), ("astronaut", "astronaut.png")):
        job = http.enroll(GALLERY, user, [samples.photo(photo)])
        assert http.wait_job(job.job_id).status == "done"
    total, later = Tally(), Tally()
    for photo in ("obama2.jpg", "grace_hopper.jpg"):
        total.add(http.identify(GALLERY, samples.photo(photo)).faces)
    for decision, count in (
        ("matched", total.matched),
        ("unknown", total.searched - total.matched),
    ):
        series = f'facegallery_identify_faces_total{{gallery="{GALLERY}",decision="{decision}"}}'
        assert prometheus.wait_for(series, count) == count
    scraped = time.monotonic()
    for client in (http, grpc, http, grpc):
        for photo in ("obama2.jpg", "grace_hopper.jpg", "astronaut.png"):
            faces = client.identify(GALLERY, samples.photo(photo)).faces
            total.add(faces)
            later.add(faces)
    with pytest.raises(InvalidInput):
        http.detect(b"not an image")  # errors by code
    for _ in range(3):  # deadlines already spent: shed
        httpx.post(
            f"{url}/v1/galleries/{GALLERY}/identify",
            files={"image": samples.photo("obama2.jpg").read_bytes()},
            headers={"x-api-key": key, "x-request-timeout": "0.001"},
        )
    assert 0 < later.matched < later.searched
    return total, later, scraped


def missing(prometheus: PrometheusServer, expressions: list[str]) -> list[str]:
    return [e for e in expressions if not prometheus.query(e)]


def test_every_panel_and_recording_rule_has_data_and_the_match_rate_is_the_answers(
    stack: dict[str, str],
    prometheus: PrometheusServer,
    samples: Samples,
    request: pytest.FixtureRequest,
) -> None:
    started = time.time()
    total, later, scraped = traffic(stack, samples, prometheus)
    dashboard = yaml.safe_load(DASHBOARD_JSON.read_text())
    panels = [as_sent(q) for q in panel_queries(dashboard)]
    recorded = [r["record"] for r in rules() if "record" in r]
    deadline = time.monotonic() + WAIT_S
    while missing(prometheus, panels + recorded) and time.monotonic() < deadline:
        time.sleep(2)
    assert missing(prometheus, panels + recorded) == []

    matched = f'sum(facegallery_identify_faces_total{{gallery="{GALLERY}",decision="matched"}})'
    searched = f'sum(facegallery_identify_faces_total{{gallery="{GALLERY}"}})'
    # Every answer counted once Prometheus has scraped after the last call.
    assert prometheus.wait_for(searched, total.searched) == total.searched
    assert prometheus.value(f"{matched} / {searched}") == pytest.approx(total.rate, abs=1e-9)
    time.sleep(3 * SCRAPE_INTERVAL_S)  # the rules evaluated on that scrape
    assert time.monotonic() - scraped < 240, "the 5 m rate's window lost the first scrape"
    rate = prometheus.value(f'facegallery:identify_match_rate:ratio_rate5m{{gallery="{GALLERY}"}}')
    assert rate == pytest.approx(later.rate, abs=0.01)
    unhealthy = [(r["name"], r.get("lastError")) for r in prometheus.rules() if r["health"] != "ok"]
    assert unhealthy == []
    picture = request.config.getoption("--dashboard-picture")
    if picture is not None:  # an operator's picture of healthy (deploy/README.md)
        draw(prometheus, dashboard, started - 5, time.time(), picture)


def test_a_broken_query_a_misspelt_metric_and_a_failing_rule_fail_the_checks(
    stack: dict[str, str], prometheus: PrometheusServer, tmp_path: Path
) -> None:
    with pytest.raises(QueryRefused):
        prometheus.query("sum by (code) (rate(facegallery_requests_total[1m])")
    assert prometheus.query("facegallery_request_total") == []  # no such metric: no data
    # Valid PromQL (promtool passes it) that fails as it runs: many-to-many matching.
    failing = tmp_path / "failing.yml"
    rule = {
        "record": "facegallery:failing",
        "expr": "facegallery_requests_total / on() facegallery_requests_total",
    }
    failing.write_text(yaml.safe_dump({"groups": [{"name": "failing", "rules": [rule]}]}))
    with PrometheusServer(tmp_path / "second", project_config(stack, [failing])) as second:
        assert isinstance(second, PrometheusServer)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            health = {r["name"]: r["health"] for r in second.rules()}
            if health.get("facegallery:failing") == "err":
                break
            time.sleep(1)
        assert health["facegallery:failing"] == "err"
