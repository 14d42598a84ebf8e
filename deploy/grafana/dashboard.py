"""facegallery's ops dashboard, as code (Grafana Labs' grafana-foundation-sdk, the Grafana
11.6 build pinned in pyproject.toml). ``facegallery.json`` beside it is this module's output,
committed for Grafana's provisioning and the chart's ConfigMap; a test regenerates it and
compares, parses every panel's query and runs each against a real Prometheus.

    .venv/bin/python deploy/grafana/dashboard.py > deploy/grafana/facegallery.json

Rows: recognition (match rate and outcomes per gallery, the best candidates' scores, gallery
size), traffic and latency (throughput, errors by code, p99 per operation and per stage,
batch sizes), overload (shed calls, admission's expected wait), enrollment (queue depth and
age, job and image outcomes) and Ray Serve (its own series: healthy replicas, processing
latency per deployment). Variables: the Prometheus data source, and the galleries shown.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from grafana_foundation_sdk.builders import dashboard, prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh

UID = "facegallery-ops"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
GALLERY = 'gallery=~"$gallery"'
RATE = "[$__rate_interval]"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Chart:
    title: str
    unit: str
    queries: tuple[Query, ...]
    description: str = ""


ROWS: dict[str, tuple[Chart, ...]] = {
    "Recognition": (
        Chart(
            "Match rate per gallery",
            "percentunit",
            (Query(f"facegallery:identify_match_rate:ratio_rate5m{{{GALLERY}}}", "{{gallery}}"),),
            "The share of searched faces matched to an enrolled user (recording rule, 5 m).",
        ),
        Chart(
            "Identify outcomes",
            "ops",
            (
                Query(
                    f"sum by (gallery, decision) "
                    f"(rate(facegallery_identify_faces_total{{{GALLERY}}}{RATE}))",
                    "{{gallery}} {{decision}}",
                ),
            ),
            "Searched faces per second, matched or unknown.",
        ),
        Chart(
            "Best candidate's score",
            "none",
            tuple(
                Query(
                    f"histogram_quantile({q}, sum by (le) "
                    f"(rate(facegallery_identify_best_score_bucket{RATE})))",
                    f"p{round(q * 100)}",
                )
                for q in (0.1, 0.5, 0.9)
            ),
            "Quantiles of each searched face's best score: a drop as a whole is a camera or "
            "model change, not fewer enrolled people in view.",
        ),
        Chart(
            "Gallery size",
            "short",
            (
                Query(
                    f"sum by (gallery, kind) (facegallery_gallery_size{{{GALLERY}}})",
                    "{{gallery}} {{kind}}",
                ),
            ),
        ),
    ),
    "Traffic and latency": (
        Chart(
            "Throughput by operation",
            "reqps",
            (
                Query(
                    f"sum by (operation) (rate(facegallery_requests_total{RATE}))", "{{operation}}"
                ),
            ),
        ),
        Chart(
            "Errors by code",
            "reqps",
            (
                Query(
                    f'sum by (code) (rate(facegallery_requests_total{{code!="OK"}}{RATE}))',
                    "{{code}}",
                ),
            ),
            "Calls that did not answer OK: callers' errors (INVALID_ARGUMENT, NOT_FOUND, ...) "
            "and the server's (UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL).",
        ),
        Chart(
            "p99 latency per operation",
            "s",
            (Query("facegallery:request_latency_seconds:p99_5m", "{{operation}}"),),
        ),
        Chart(
            "p99 latency per stage",
            "s",
            (Query("facegallery:stage_latency_seconds:p99_5m", "{{stage}}"),),
            "decode, detect, align, embed (per batch), search, upsert.",
        ),
        Chart(
            "Mean batch size",
            "short",
            (
                Query(
                    f"sum by (deployment) (rate(facegallery_batch_size_sum{RATE})) "
                    f"/ sum by (deployment) (rate(facegallery_batch_size_count{RATE}))",
                    "{{deployment}}",
                ),
            ),
            "Images per Detector batch, faces per Embedder batch: batching across requests.",
        ),
    ),
    "Overload": (
        Chart(
            "Shed calls",
            "reqps",
            (
                Query(
                    f"sum by (reason, stage) (rate(facegallery_shed_total{RATE}))",
                    "{{reason}} at {{stage}}",
                ),
            ),
            "Work dropped before it cost a batch slot: refused at the door (admission), its "
            "deadline passed (expired), its caller gone (cancelled).",
        ),
        Chart(
            "Admission's expected wait",
            "s",
            (Query("max(facegallery_expected_wait_seconds)", "expected wait"),),
        ),
    ),
    "Enrollment": (
        Chart(
            "Queue",
            "short",
            (Query("sum by (state) (facegallery_queue_jobs)", "{{state}}"),),
            "Unfinished jobs, entries pending in the consumer group, dead letters.",
        ),
        Chart(
            "Oldest job's wait",
            "s",
            (Query("max(facegallery_queue_oldest_seconds)", "oldest"),),
        ),
        Chart(
            "Job outcomes",
            "ops",
            (Query(f"sum by (outcome) (rate(facegallery_jobs_total{RATE}))", "{{outcome}}"),),
        ),
        Chart(
            "Enrollment images",
            "ops",
            (
                Query(
                    f"sum by (status, reason) (rate(facegallery_enroll_images_total{RATE}))",
                    "{{status}} {{reason}}",
                ),
            ),
        ),
    ),
    "Ray Serve": (
        Chart(
            "Healthy replicas",
            "short",
            (
                Query(
                    "sum by (deployment) "
                    '(ray_serve_deployment_replica_healthy{application="facegallery"})',
                    "{{deployment}}",
                ),
            ),
            "Ray Serve's own series, from Ray's metrics agent on each node.",
        ),
        Chart(
            "Replica processing p99",
            "ms",
            (
                Query(
                    "histogram_quantile(0.99, sum by (deployment, le) "
                    "(rate(ray_serve_deployment_processing_latency_ms_bucket"
                    f'{{application="facegallery"}}{RATE})))',
                    "{{deployment}}",
                ),
            ),
        ),
    ),
}


def queries() -> list[str]:
    """Every panel's PromQL, as the dashboard holds it (with Grafana's variables)."""
    return [q.expr for charts in ROWS.values() for chart in charts for q in chart.queries]


def build() -> dashboard.Dashboard:
    board = (
        dashboard.Dashboard("facegallery")
        .uid(UID)
        .tags(["facegallery"])
        .time("now-1h", "now")
        .refresh("30s")
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus")
        )
        .with_variable(
            dashboard.QueryVariable("gallery")
            .label("Gallery")
            .datasource(DATASOURCE)
            .query("label_values(facegallery_identify_faces_total, gallery)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .multi(True)
            .include_all(True)
            .all_value(".*")  # every gallery, also those nobody searched in the time range
        )
    )
    ids = iter(range(1, 1000))
    for row, charts in ROWS.items():
        board = board.with_row(dashboard.Row(row).id(next(ids)))
        for chart in charts:
            panel = (
                timeseries.Panel()
                .id(next(ids))
                .title(chart.title)
                .description(chart.description)
                .datasource(DATASOURCE)
                .unit(chart.unit)
                .span(8)
                .height(8)
            )
            for letter, query in zip("ABCDEFGH", chart.queries, strict=False):
                panel = panel.with_target(
                    prometheus.Dataquery()
                    .ref_id(letter)
                    .expr(query.expr)
                    .legend_format(query.legend)
                )
            board = board.with_panel(panel)
    return board


def render() -> str:
    """The dashboard's JSON, as committed in facegallery.json."""
    return json.dumps(build().build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(render(), end="")
