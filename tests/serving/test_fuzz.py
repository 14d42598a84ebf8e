"""The served contract, fuzzed: schemathesis generates requests for every operation of the
served OpenAPI document (valid ones and broken ones) with an admin key, so that operations
are run and not only refused, and checks that no answer is a 5xx and every answer conforms
to the document. The document itself must be self-contained (every $ref resolves)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serving.conftest import Served

pytestmark = pytest.mark.slow
EXAMPLES = 25  # per operation and phase


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if "$ref" in node else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_the_openapi_document_is_self_contained(served: Served) -> None:
    document = httpx.get(f"{served.http_url}/openapi.json").json()
    for ref in set(_refs(document)):
        node = document
        for part in ref.removeprefix("#/").split("/"):
            assert part in node, f"{ref} does not resolve"
            node = node[part]
    job = document["paths"]["/v1/jobs/{job_id}"]["get"]["parameters"][0]
    assert job["schema"]["pattern"] == "^[0-9a-f]{32}$"


def test_schemathesis_finds_no_server_error_and_no_nonconforming_answer(
    served: Served, tmp_path: Path
) -> None:
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{served.http_url}/openapi.json",
        "--checks",
        "not_a_server_error,response_schema_conformance",
        "--header",
        f"x-api-key: {served.admin}",
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        "29",
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--generation-database",
        "none",
        "--no-color",
        "--suppress-health-check",
        "all",
    ]
    run = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=900, check=False
    )
    report = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, report
    counted = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
    assert counted is not None, report
    assert int(counted[1]) == int(counted[2]) >= 10 * EXAMPLES, report  # it really ran
