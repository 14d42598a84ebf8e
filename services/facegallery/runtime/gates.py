"""Verdicts of the precision gate: whether a reduced precision of a model may stand in for
its fp32 outputs.

A reduced precision (OpenVINO's bf16) changes a model's outputs, so it cannot pass the
backend trial's 1e-3 agreement with ONNX Runtime; whether a recognizer's embeddings are
still the same space, or a detector's faces still align to the same crops, is a question
about accuracy, answered on a labelled pairs set by `facegallery eval precision-gate`
(`evaluation.precision_gate`). Its verdict is kept here, beside the backend verdict, keyed
by the model id, the precision, OpenVINO's version and the CPU's bf16 unit (AMX and
AVX-512 BF16 round differently). Only a passing verdict makes the precision one of
``runtime.backend: auto``'s candidates, under the model's own id.

A production machine has no development set to run the gate on, so facegallery ships the
verdicts measured on its own machines (``shipped_gates.json``: entries that command wrote
to ``precision-gate.json``, copied): they count where OpenVINO's version and the bf16 unit
are the ones measured,
unless ``runtime.shipped_gates`` is off. A verdict measured on this machine comes first.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any, Literal

from facegallery.core.config import RuntimeSettings
from facegallery.models import PreparedModel
from facegallery.runtime.hardware import bf16_unit, cpu_name, openvino_version
from facegallery.runtime.verdict_file import add_verdict, read_verdicts

GATE_FILE = "precision-gate.json"
SHIPPED_FILE = "shipped_gates.json"  # in this package
REDUCED = ("bf16",)  # OpenVINO precisions a gate may admit
Origin = Literal["here", "shipped"]


@dataclass(frozen=True)
class GateVerdict:
    """A gate's measurement and decision for one model at one reduced precision."""

    model_id: str
    precision: str
    passed: bool
    reasons: list[str]  # why it failed (empty when it passed)
    pairs_set: str
    tolerance: float  # largest drop allowed, as a fraction (0.001: 0.1 point)
    agreement: dict[str, float]  # how far each face's outputs moved (cosine, or pixels)
    fp32: dict[str, float]  # accuracy, TAR and FAR of fp32 x fp32 at fp32's thresholds
    cross: dict[str, dict[str, float]]  # the same for each mix of gallery and probe precision
    measured_on: str = ""  # the CPU the gate ran on


def gate_key(model: PreparedModel, precision: str) -> str:
    return f"{model.model_id} {precision} ov={openvino_version()} unit={bf16_unit()}"


def find_gate(
    model: PreparedModel, precision: str, settings: RuntimeSettings
) -> tuple[GateVerdict, Origin] | None:
    """The verdict that rules here for ``model`` at ``precision``, and where it comes from:
    measured on this machine, else shipped (where allowed), else none."""
    key = gate_key(model, precision)
    found = read_verdicts(settings.engine_dir / GATE_FILE).get(key)
    origin: Origin = "here"
    if found is None and settings.shipped_gates:
        found, origin = shipped_verdicts().get(key), "shipped"
    try:
        return (GateVerdict(**found), origin) if found else None
    except TypeError:  # a verdict of another layout
        return None


def read_gate(
    model: PreparedModel, precision: str, settings: RuntimeSettings
) -> GateVerdict | None:
    found = find_gate(model, precision, settings)
    return found[0] if found else None


@functools.cache
def shipped_verdicts() -> dict[str, dict[str, Any]]:
    text = resources.files("facegallery.runtime").joinpath(SHIPPED_FILE).read_text()
    verdicts: dict[str, dict[str, Any]] = json.loads(text)
    return verdicts


def gated_precisions(model: PreparedModel, settings: RuntimeSettings) -> list[str]:
    """The reduced precisions whose gate this model passed on this kind of machine."""
    return [
        precision
        for precision in REDUCED
        if (verdict := read_gate(model, precision, settings)) is not None and verdict.passed
    ]


def write_gate(model: PreparedModel, verdict: GateVerdict, settings: RuntimeSettings) -> None:
    add_verdict(
        settings.engine_dir / GATE_FILE, gate_key(model, verdict.precision), asdict(verdict)
    )


def measured_here() -> str:
    """What a new verdict records as the machine it was measured on."""
    return f"{cpu_name()} ({bf16_unit()})"
