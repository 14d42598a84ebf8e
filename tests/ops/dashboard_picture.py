"""A picture of the ops dashboard's main panels as they were during the end-to-end check,
plotted from Prometheus' own answers to the panels' queries (no Grafana installs here), so
that an operator sees what a healthy stack looks like (deploy/README.md shows it).

`pytest tests/ops/test_observability.py -k every_panel --dashboard-picture
deploy/img/dashboard-e2e.png`
draws it once the check has passed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from tests.ops.dashboard_module import as_sent
from tests.prometheus import PrometheusServer

MAIN_PANELS = (
    "Match rate per gallery",
    "Identify outcomes",
    "Throughput by operation",
    "p99 latency per operation",
    "Mean batch size",
    "Shed calls",
    "Queue",
    "Healthy replicas",
)


def panels(dashboard: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Every graph panel's targets, by title (the dashboard's rows are open: its panels
    follow them at the top level)."""
    return {p["title"]: p.get("targets", []) for p in dashboard["panels"] if p["type"] != "row"}


def draw(
    prometheus: PrometheusServer,
    dashboard: dict[str, Any],
    start: float,
    end: float,
    path: Path,
) -> None:
    targets = panels(dashboard)
    figure, axes = plt.subplots(4, 2, figsize=(12, 11), sharex=True)
    for axis, title in zip(axes.flat, MAIN_PANELS, strict=True):
        for target in targets[title]:
            for series in prometheus.query_range(as_sent(target["expr"]), start, end, 1.0):
                times = [float(t) - start for t, _ in series["values"]]
                values = [float(v) for _, v in series["values"]]
                legend = target.get("legendFormat", "")
                for name, value in series["metric"].items():
                    legend = legend.replace("{{" + name + "}}", value)
                axis.plot(times, values, label=legend or title)
        axis.set_title(title, fontsize=10)
        axis.set_ylim(bottom=0)  # every main panel counts or times something
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend(fontsize=7, loc="upper left")
    for axis in axes[-1]:
        axis.set_xlabel("seconds into the end-to-end check")
    figure.suptitle("facegallery's dashboard during tests/ops/test_observability.py", fontsize=12)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
