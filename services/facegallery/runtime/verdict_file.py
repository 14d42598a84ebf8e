"""A file of measured verdicts (``backend-choice.json``, ``precision-gate.json``): a JSON
object keyed by what the verdict depends on, read as empty when missing or unreadable, and
written whole through a temporary file of its own, so a reader never sees half of it and two
replicas starting together do not trip over one temporary name."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def read_verdicts(path: Path) -> dict[str, Any]:
    try:
        found = json.loads(path.read_text())
        return found if isinstance(found, dict) else {}
    except (OSError, ValueError):
        return {}


def add_verdict(path: Path, key: str, verdict: dict[str, Any]) -> None:
    """Add (or replace) one verdict; the others in the file are kept."""
    known = read_verdicts(path)
    known[key] = verdict
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".part")
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(known, indent=1, sort_keys=True))
    Path(tmp).replace(path)
