"""The dashboard's generator (``deploy/grafana/dashboard.py``, a script beside the JSON it
writes, not a module of the package), loaded for the tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
DASHBOARD_JSON = REPO / "deploy" / "grafana" / "facegallery.json"

# What Grafana puts in place of the dashboard's variables before it sends a query.
VARIABLES = {"$__rate_interval": "1m", "$gallery": ".*"}


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "facegallery_dashboard", REPO / "deploy" / "grafana" / "dashboard.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def as_sent(expression: str) -> str:
    """A panel's query as Grafana sends it to Prometheus."""
    for name, value in VARIABLES.items():
        expression = expression.replace(name, value)
    return expression
