"""``runtime.backend: auto``: measure the CPU backends on this machine, per model, and keep
the fastest.

Which runtime is fastest depends on the model and the CPU (on one machine cv2.dnn ran SFace
~1.5x faster than ONNX Runtime, on another ORT won the detector, and on an AMD EPYC OpenVINO
at fp32 ran SFace 1.7-1.9x cv2.dnn: docs/benchmarks.md), so it is measured, not
assumed: a short trial of each backend that runs the model correctly (its outputs agree with
ONNX Runtime's), at batch sizes the pipeline uses, on the model's typical input shape. Thread
counts are part of the trial when ``runtime.intra_op_threads`` is 0: one thread, and every core
this process may run on (never more, so a runtime's pool does not oversubscribe the cores;
small models often run faster on one thread than pay the pool's hand-offs). The verdict is
cached in ``runtime.engine_dir`` keyed by the model id, the backends' versions, the CPU, the
usable cores and the thread setting, so the trial runs once per machine and model.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from facegallery.core.config import RuntimeSettings
from facegallery.core.errors import FailedPrecondition
from facegallery.models import PreparedModel
from facegallery.runtime.base import InferenceRuntime, ShapeProfile
from facegallery.runtime.gates import gated_precisions
from facegallery.runtime.hardware import cpu_name, openvino_version
from facegallery.runtime.onnx import OnnxRuntime
from facegallery.runtime.opencv import OpenCvRuntime
from facegallery.runtime.openvino import OpenVinoRuntime
from facegallery.runtime.verdict_file import add_verdict, read_verdicts

CPU_BACKENDS = ("onnxruntime", "opencv", "openvino")
TRIAL_BATCHES = (1, 4)
TRIAL_SECONDS = 0.5  # per backend and batch size
TOLERANCE = 1e-3  # largest absolute output difference from ONNX Runtime's accepted
CHOICE_FILE = "backend-choice.json"


@dataclass(frozen=True)
class Choice:
    """A measured verdict: the backend and thread count kept, and ms per batch of each
    candidate ("backend:threads") and batch size tried."""

    backend: str
    threads: int
    ms: dict[str, dict[str, float]]  # "backend:threads" -> batch size -> ms
    refused: dict[str, str]  # backend -> why it was not a candidate


def choose_runtime(
    model: PreparedModel, settings: RuntimeSettings, profile: ShapeProfile
) -> tuple[InferenceRuntime, Choice]:
    """The fastest correct CPU backend for ``model`` (cached verdict, or a trial now)."""
    cached = measured_choice(model, settings)
    if cached is not None:
        return _build(cached.backend, model.path, _threads(settings, cached.threads)), cached
    choice, runtime = _trial(model, settings, profile)
    add_verdict(settings.engine_dir / CHOICE_FILE, cache_key(model, settings), asdict(choice))
    return runtime, choice


def measured_choice(model: PreparedModel, settings: RuntimeSettings) -> Choice | None:
    """The cached verdict of ``auto`` for this model on this machine, if it has run."""
    known = read_verdicts(settings.engine_dir / CHOICE_FILE).get(cache_key(model, settings))
    try:
        return Choice(**known) if known else None
    except TypeError:  # a verdict written before threads were part of the trial
        return None


def cache_key(model: PreparedModel, settings: RuntimeSettings) -> str:
    return (
        f"{model.model_id} ort={ort.__version__} cv2={cv2.__version__} "
        f"ov={openvino_version()} "
        f"cpu={cpu_name()} cores={usable_cores()} threads={settings.intra_op_threads} "
        f"spin={settings.ort_spin_wait} gated={','.join(gated_precisions(model, settings))}"
    )


def thread_candidates(settings: RuntimeSettings) -> list[int]:
    """The thread counts the trial tries: the configured one, or 1 and all usable cores."""
    if settings.intra_op_threads:
        return [settings.intra_op_threads]
    return sorted({1, usable_cores()})


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, e.g. a container's cpuset)."""
    return len(os.sched_getaffinity(0))


def _trial(
    model: PreparedModel, settings: RuntimeSettings, profile: ShapeProfile
) -> tuple[Choice, InferenceRuntime]:
    rng = np.random.default_rng(0)
    batches = {
        n: rng.uniform(0, 255, (n, *profile.opt_chw)).astype(np.float32)
        for n in TRIAL_BATCHES
        if n <= profile.max_batch
    }
    threads = thread_candidates(settings)
    reference = OnnxRuntime(model.path, _threads(settings, threads[-1]))
    expected = {n: reference.run(b) for n, b in batches.items()}
    runtimes: dict[tuple[str, int], InferenceRuntime] = {("onnxruntime", threads[-1]): reference}
    refused: dict[str, str] = {}
    for name in CPU_BACKENDS:
        try:
            for count in threads:
                if (name, count) in runtimes:
                    continue
                candidate = _build(name, model.path, _threads(settings, count))
                _check(candidate, batches, expected)
                runtimes[name, count] = candidate
        except FailedPrecondition as exc:
            refused[name] = exc.message
    # A reduced precision that passed its gate (runtime.gates): the gate, on labelled pairs,
    # is its correctness check, not agreement with ONNX Runtime's fp32 outputs.
    for precision in gated_precisions(model, settings):
        name = f"openvino-{precision}"
        try:
            for count in threads:
                runtimes[name, count] = _build(name, model.path, _threads(settings, count))
        except FailedPrecondition as exc:  # e.g. a verdict copied to a CPU without bf16
            refused[name] = exc.message
    ms = {
        key: {str(n): round(_ms_per_batch(runtime, b), 3) for n, b in batches.items()}
        for key, runtime in runtimes.items()
    }
    best = min(ms, key=lambda key: sum(ms[key].values()))
    labelled = {f"{name}:{count}": per for (name, count), per in ms.items()}
    return Choice(best[0], best[1], labelled, refused), runtimes[best]


def _check(
    candidate: InferenceRuntime,
    batches: dict[int, np.ndarray],
    expected: dict[int, list[np.ndarray]],
) -> None:
    """Refuse a backend whose outputs are not ONNX Runtime's (a wrong answer fast is no use)."""
    for n, batch in batches.items():
        got = candidate.run(batch)
        worst = max(float(np.abs(a - b).max()) for a, b in zip(got, expected[n], strict=True))
        if worst > TOLERANCE:
            raise FailedPrecondition(f"outputs differ from ONNX Runtime's by {worst:.2g}")


def _ms_per_batch(runtime: InferenceRuntime, batch: np.ndarray) -> float:
    runtime.run(batch)  # warm up
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < TRIAL_SECONDS:
        t0 = time.perf_counter()
        runtime.run(batch)
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def _threads(settings: RuntimeSettings, count: int) -> RuntimeSettings:
    return settings.model_copy(update={"intra_op_threads": count})


def _build(name: str, path: Path, settings: RuntimeSettings) -> InferenceRuntime:
    if name == "opencv":
        return OpenCvRuntime(path, settings)
    if name.startswith("openvino"):
        return OpenVinoRuntime(path, settings, name.partition("-")[2] or "f32")
    return OnnxRuntime(path, settings)
