"""What the operations checks share: the metric names a PromQL expression reads (parsed with
promql-parser, never by pattern), and the names the project really exports."""

from __future__ import annotations

from typing import Any

import promql_parser
from prometheus_client.metrics import MetricWrapperBase

from facegallery.core import telemetry

# Series of others that rules and panels may read: Prometheus' own scrape health, and Ray
# Serve's (Ray's metrics agent, scraped beside the exporters).
FOREIGN_NAMES = {"up"}
FOREIGN_PREFIX = "ray_serve_"

_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "gauge": ("",),
}


def selector_names(expression: str) -> set[str]:
    """Every metric name a PromQL expression selects (a syntax error raises)."""
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            return
        for attribute in ("expr", "lhs", "rhs", "vector_selector", "param"):
            child = getattr(node, attribute, None)
            if child is not None:
                walk(child)
        for child in getattr(node, "args", None) or []:
            walk(child)

    walk(promql_parser.parse(expression))
    return names


def exported_names() -> set[str]:
    """The sample names of every metric defined in ``core/telemetry.py``."""
    names: set[str] = set()
    for value in vars(telemetry).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                names.update(family.name + s for s in _SUFFIXES[family.type])
    return names


def unknown_names(expressions: list[str], also: frozenset[str] = frozenset()) -> set[str]:
    """Names the expressions read that nothing exports (a misspelt metric, a dropped one);
    ``also``: names recorded by rules."""
    known = exported_names() | FOREIGN_NAMES | also
    found: set[str] = set()
    for expression in expressions:
        found |= selector_names(expression)
    return {n for n in found if n not in known and not n.startswith(FOREIGN_PREFIX)}
