"""The ops dashboard (``deploy/grafana/``): the committed JSON is the generator's output,
and every panel's query parses and reads only metrics the project exports, the rules record,
or Ray Serve exports; each check is shown to catch a broken query and a misspelt metric."""

from __future__ import annotations

import json

import promql_parser
import pytest

from tests.ops.dashboard_module import DASHBOARD_JSON, as_sent, generator
from tests.ops.promql import unknown_names
from tests.ops.test_prometheus_rules import rules

RECORDED = frozenset(r["record"] for r in rules() if "record" in r)


def panel_queries(board: dict[str, object]) -> list[str]:
    panels = board["panels"]
    assert isinstance(panels, list)
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def test_the_committed_dashboard_is_the_generators_output() -> None:
    assert DASHBOARD_JSON.read_text() == generator().render(), (
        "run: .venv/bin/python deploy/grafana/dashboard.py > deploy/grafana/facegallery.json"
    )


def test_every_query_parses_and_reads_real_metrics() -> None:
    board = json.loads(DASHBOARD_JSON.read_text())
    queries = panel_queries(board)
    assert len(queries) >= 18
    assert unknown_names([as_sent(q) for q in queries], RECORDED) == set()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["gallery"]["includeAll"] and variables["gallery"]["multi"]
    uids = {p["datasource"]["uid"] for p in board["panels"] if p["type"] != "row"}
    assert uids == {"${datasource}"}


def test_a_broken_query_and_a_misspelt_metric_are_caught() -> None:
    queries = generator().queries()
    misspelt = [q.replace("facegallery_jobs_total", "facegallery_job_total") for q in queries]
    assert unknown_names([as_sent(q) for q in misspelt], RECORDED) == {"facegallery_job_total"}
    broken = as_sent(queries[1]).replace("rate(", "rate((", 1)
    with pytest.raises(ValueError):
        promql_parser.parse(broken)
