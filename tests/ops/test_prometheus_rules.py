"""The alerting and recording rules (``deploy/prometheus/``) checked by real tools:
Prometheus' own ``promtool`` checks them and runs their unit tests, every alert has a case
that fires and one that must not, a runbook section, and reads only metrics the project
exports; each check is shown to catch what it is for."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.ops.promql import unknown_names

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "rules.yml"
RULES_TEST = REPO / "deploy" / "prometheus" / "rules_test.yml"
RUNBOOKS = REPO / "docs" / "runbooks.md"


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: apt-get install prometheus (deploy/install.sh --dev)"
    return subprocess.run([binary, *map(str, args)], capture_output=True, text=True, check=False)


def rules(path: Path = RULES) -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]]


def unknown_in(path: Path) -> set[str]:
    listed = rules(path)
    recorded = frozenset(r["record"] for r in listed if "record" in r)
    return unknown_names([r["expr"] for r in listed], recorded)


def test_promtool_checks_the_rules_and_runs_their_tests() -> None:
    checked = promtool("check", "rules", RULES)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", RULES_TEST)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_case_that_fires_and_one_that_must_not() -> None:
    alerts = {r["alert"] for r in rules() if "alert" in r}
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(RULES_TEST.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    assert alerts - fires == set() and alerts - quiet == set()


def test_every_alert_has_a_runbook_section_and_reads_real_metrics() -> None:
    anchors = {
        re.sub(r"[^a-z0-9]", "", line.removeprefix("## ").lower())
        for line in RUNBOOKS.read_text().splitlines()
        if line.startswith("## ")
    }
    for rule in rules():
        if "alert" in rule:
            url = rule["annotations"]["runbook_url"]
            assert url == f"docs/runbooks.md#{rule['alert'].lower()}", url
            assert rule["alert"].lower() in anchors, rule["alert"]
    assert unknown_in(RULES) == set()


def test_a_misspelt_metric_and_an_invalid_rule_are_caught(tmp_path: Path) -> None:
    text = RULES.read_text()
    misspelt = tmp_path / "misspelt.yml"
    misspelt.write_text(
        text.replace("facegallery_queue_oldest_seconds", "facegallery_queue_oldest_s")
    )
    assert unknown_in(misspelt) == {"facegallery_queue_oldest_s"}
    invalid = tmp_path / "invalid.yml"
    invalid.write_text(text.replace("> 500", "> > 500"))
    assert promtool("check", "rules", invalid).returncode != 0
