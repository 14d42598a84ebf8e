"""What a measured verdict depends on besides the model: the CPU and the backends' versions."""

from __future__ import annotations

from pathlib import Path


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    names = (line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    return next(names, "unknown")


def openvino_version() -> str:
    try:
        from openvino import __version__
    except ImportError:
        return "none"
    return str(__version__).split("-")[0]
