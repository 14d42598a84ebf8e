"""Verdicts of the precision gate: whether a reduced precision of a model may stand in for
its fp32 embeddings on this machine.

A reduced precision (OpenVINO's bf16) changes a model's outputs, so it cannot pass the
backend trial's 1e-3 agreement with ONNX Runtime; whether its embeddings are still the same
space is a question about accuracy, answered on a labelled pairs set by
`facegallery eval precision-gate` (`evaluation.precision_gate`). Its verdict is kept here,
beside the backend verdict, keyed by the model id, the precision, OpenVINO's version and
the CPU (bf16 arithmetic differs between AMX and AVX-512 BF16 units). Only a passing verdict
makes the precision one of ``runtime.backend: auto``'s candidates, under the model's own id.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from facegallery.core.config import RuntimeSettings
from facegallery.models import PreparedModel
from facegallery.runtime.hardware import cpu_name, openvino_version
from facegallery.runtime.verdict_file import add_verdict, read_verdicts

GATE_FILE = "precision-gate.json"
REDUCED = ("bf16",)  # OpenVINO precisions a gate may admit


@dataclass(frozen=True)
class GateVerdict:
    """A gate's measurement and decision for one model at one reduced precision."""

    model_id: str
    precision: str
    passed: bool
    reasons: list[str]  # why it failed (empty when it passed)
    pairs_set: str
    tolerance: float  # largest drop allowed, as a fraction (0.001: 0.1 point)
    agreement: dict[str, float]  # cosine of each image's fp32 and reduced embedding
    fp32: dict[str, float]  # accuracy, TAR and FAR of fp32 x fp32 at fp32's thresholds
    cross: dict[str, dict[str, float]]  # the same for each mix of gallery and probe precision


def gate_key(model: PreparedModel, precision: str) -> str:
    return f"{model.model_id} {precision} ov={openvino_version()} cpu={cpu_name()}"


def read_gate(
    model: PreparedModel, precision: str, settings: RuntimeSettings
) -> GateVerdict | None:
    found = read_verdicts(settings.engine_dir / GATE_FILE).get(gate_key(model, precision))
    try:
        return GateVerdict(**found) if found else None
    except TypeError:
        return None


def gated_precisions(model: PreparedModel, settings: RuntimeSettings) -> list[str]:
    """The reduced precisions whose gate this model passed on this machine."""
    return [
        precision
        for precision in REDUCED
        if (verdict := read_gate(model, precision, settings)) is not None and verdict.passed
    ]


def write_gate(model: PreparedModel, verdict: GateVerdict, settings: RuntimeSettings) -> None:
    add_verdict(
        settings.engine_dir / GATE_FILE, gate_key(model, verdict.precision), asdict(verdict)
    )
