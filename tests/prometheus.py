"""A real Prometheus server (Debian's ``prometheus``) for tests, under the project's one
supervisor pattern: it scrapes the targets its configuration names, evaluates its rules and
answers PromQL over its HTTP API, as an operator's Prometheus would."""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

from facegallery.servers.supervisor import Launch, ManagedServer, free_port

SCRAPE_INTERVAL_S = 1


def node_scrape_config(targets: Mapping[str, str]) -> dict[str, Any]:
    """A configuration that scrapes ``targets`` (a node name -> its exporter's
    ``host:port``, labelled ``node``) every second, as job ``facegallery``."""
    return {
        "scrape_configs": [
            {
                "job_name": "facegallery",
                "scrape_interval": f"{SCRAPE_INTERVAL_S}s",
                "static_configs": [
                    {"targets": [address], "labels": {"node": node}}
                    for node, address in targets.items()
                ],
            }
        ]
    }


class QueryRefused(Exception):
    """Prometheus answered a query with an error (a syntax error, a bad function call)."""


class PrometheusServer(ManagedServer):
    """A Prometheus with ``config`` (its YAML as a dict; rule files by absolute path)."""

    name = "prometheus"

    def __init__(self, data_dir: Path, config: Mapping[str, Any]) -> None:
        super().__init__(data_dir, start_timeout_s=60.0, stop_timeout_s=10.0)
        self.config = dict(config)
        self.port = free_port()

    @property
    def ports(self) -> Mapping[str, int]:
        return {"http": self.port}

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def launch(self) -> Launch:
        binary = shutil.which("prometheus") or "/usr/bin/prometheus"
        config = self.data_dir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config))
        command = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.data_dir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        return Launch(command=command, cwd=self.data_dir)

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.uri}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def query(self, expression: str) -> list[dict[str, Any]]:
        """The instant vector ``expression`` evaluates to now: [{"metric": labels, "value":
        [time, "v"]}, ...]; a query Prometheus refuses raises `QueryRefused`."""
        answer = httpx.get(f"{self.uri}/api/v1/query", params={"query": expression}, timeout=10)
        if answer.status_code != 200:
            raise QueryRefused(f"{expression!r}: {answer.json().get('error', answer.text)}")
        result: list[dict[str, Any]] = answer.json()["data"]["result"]
        return result

    def query_range(
        self, expression: str, start: float, end: float, step_s: float
    ) -> list[dict[str, Any]]:
        """The range vector over [start, end] (Unix seconds) every ``step_s``: [{"metric":
        labels, "values": [[time, "v"], ...]}, ...], as a dashboard's graph asks for it."""
        answer = httpx.get(
            f"{self.uri}/api/v1/query_range",
            params={"query": expression, "start": start, "end": end, "step": step_s},
            timeout=30,
        )
        if answer.status_code != 200:
            raise QueryRefused(f"{expression!r}: {answer.json().get('error', answer.text)}")
        result: list[dict[str, Any]] = answer.json()["data"]["result"]
        return result

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule with its health (ok, err, unknown) and last error."""
        answer = httpx.get(f"{self.uri}/api/v1/rules", timeout=10)
        answer.raise_for_status()
        return [r for g in answer.json()["data"]["groups"] for r in g["rules"]]

    def value(self, expression: str) -> float | None:
        """The single value of a scalar-like query (None when it has no series)."""
        result = self.query(expression)
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, expression: str, wanted: float, timeout_s: float = 30.0) -> float | None:
        """Poll ``expression`` until it reaches ``wanted`` (or ``timeout_s``); its last value,
        read once more a few scrapes later, so that a value still rising shows."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = self.value(expression)
            if value is not None and value >= wanted:
                time.sleep(3 * SCRAPE_INTERVAL_S)
                return self.value(expression)
            time.sleep(SCRAPE_INTERVAL_S / 2)
        return self.value(expression)
