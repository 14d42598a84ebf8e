"""What every benchmark shares: where the development face sets are, and the machine its JSON
names (printed, and saved where asked)."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping
from pathlib import Path

# ../shared/faces beside the checkout (never copied into it).
FACES = Path(__file__).resolve().parents[2] / "shared" / "faces"


def machine() -> str:
    """CPU model and core count (the numbers mean nothing without them)."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} cores, {platform.system()}"


def emit(results: Mapping[str, object], path: Path | None) -> None:
    """Print the results as JSON, and write them to ``path`` when given."""
    text = json.dumps({"machine": machine(), **results}, indent=2)
    print(text)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
