"""What a measured verdict depends on besides the model: the CPU and the backends' versions."""

from __future__ import annotations

import functools
from pathlib import Path


def _cpuinfo(field: str) -> str:
    """The first ``field`` line of /proc/cpuinfo ("" where there is none)."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    values = (line.split(":", 1)[1].strip() for line in lines if line.startswith(field))
    return next(values, "")


def cpu_name() -> str:
    return _cpuinfo("model name") or "unknown"


@functools.cache
def bf16_unit() -> str:
    """The unit that does OpenVINO's bf16 arithmetic here: ``amx`` (Xeon since Sapphire
    Rapids: tile matrix multiplies), ``avx512_bf16`` (Cooper Lake, AMD Zen 4 and later: dot
    products in vector registers), or ``none``. The two round and accumulate differently,
    so a precision gate's verdict holds for one unit, on any CPU model that has it."""
    flags = set(_cpuinfo("flags").split())
    if "amx_bf16" in flags:
        return "amx"
    return "avx512_bf16" if "avx512_bf16" in flags else "none"


def openvino_version() -> str:
    try:
        from openvino import __version__
    except ImportError:
        return "none"
    return str(__version__).split("-")[0]
