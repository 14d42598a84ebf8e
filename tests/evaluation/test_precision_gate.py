"""The precision gate on a real development set (celeba_150's pairs, identity-disjoint from
the recognizer's training data): the same model at fp32 on another runtime passes, a
deliberately degraded model is refused with its reasons, and only a passing verdict makes a
reduced precision one of ``auto``'s candidates."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from facegallery.core.config import RuntimeSettings, Settings
from facegallery.core.errors import InvalidInput
from facegallery.evaluation.pairs import read_pairs
from facegallery.evaluation.precision_gate import face_crops, run_gate
from facegallery.models import ModelStore
from facegallery.runtime import ShapeProfile
from facegallery.runtime.choice import choose_runtime
from facegallery.runtime.gates import GateVerdict, read_gate, write_gate
from facegallery.runtime.onnx import OnnxRuntime
from facegallery.runtime.openvino import OpenVinoRuntime
from facegallery.vision.embed import Embedder
from facegallery.vision.pipeline import FacePipeline

pytestmark = pytest.mark.slow

CELEBA = Path(__file__).resolve().parents[3] / "shared" / "faces" / "celeba_150"
CROP = ShapeProfile((3, 112, 112), (3, 112, 112), (3, 112, 112), 8)


def _degraded(path: Path, out: Path) -> Path:
    """The recognizer with 10% multiplicative noise on its convolutions' weights: the same
    graph, a worse model (each embedding about 0.7 in cosine from the original's), which is
    what a broken precision would look like to a gallery."""
    model = onnx.load(str(path))
    rng = np.random.default_rng(0)
    for init in model.graph.initializer:
        weights = numpy_helper.to_array(init)
        if weights.dtype == np.float32 and weights.ndim == 4:
            noisy = weights * (1 + 0.1 * rng.standard_normal(weights.shape)).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(noisy, init.name))
    onnx.save(model, str(out))
    return out


def test_the_gate_passes_a_faithful_runtime_and_refuses_a_degraded_model(
    pipeline: FacePipeline, settings: Settings, tmp_path: Path
) -> None:
    """The reference is fp32 on ONNX Runtime; the same model at fp32 on OpenVINO is another
    runtime with the same space (passes), a noisy copy of the model is not (refused)."""
    pairs = read_pairs(CELEBA / "pairs.csv")
    crops = face_crops(pipeline, CELEBA, pairs)
    sface = ModelStore(settings.models).load_configured()[1]
    assert isinstance(pipeline.embedder, Embedder)
    reference = pipeline.embedder.on_runtime(OnnxRuntime(sface.path, settings.runtime))
    same_model = pipeline.embedder.on_runtime(OpenVinoRuntime(sface.path, settings.runtime))
    faithful = run_gate(crops, pairs, reference, same_model, "f32", CELEBA.name)
    assert faithful.passed and faithful.reasons == []
    assert faithful.agreement["min"] > 0.9999
    assert faithful.fp32["accuracy_mean"] > 0.9  # the set really measures something
    assert faithful.fp32["far_at_that_threshold"] <= 1e-3
    broken = _degraded(sface.path, tmp_path / "degraded.onnx")
    worse = pipeline.embedder.on_runtime(OpenVinoRuntime(broken, settings.runtime))
    refused = run_gate(crops, pairs, reference, worse, "f32", CELEBA.name)
    assert not refused.passed
    assert any(r.startswith("reduced_gallery_reduced_probe: accuracy") for r in refused.reasons)
    mixed = refused.cross["fp32_gallery_reduced_probe"]
    assert mixed["accuracy_mean"] < refused.fp32["accuracy_mean"] - 0.001
    assert refused.fp32 == faithful.fp32  # the reference is the same fp32 on the same set
    with pytest.raises(InvalidInput, match="impostor pairs"):
        run_gate(crops, pairs[:500], reference, same_model, "f32", "a few pairs")


def test_only_a_passing_verdict_makes_bf16_a_candidate_of_auto(
    settings: Settings, tmp_path: Path
) -> None:
    sface = ModelStore(settings.models).load_configured()[1]
    runtime_settings = RuntimeSettings(engine_dir=tmp_path, intra_op_threads=1)
    verdict = GateVerdict(
        sface.model_id, "bf16", False, ["a drop"], "celeba_150", 0.001, {}, {}, {}
    )
    write_gate(sface, verdict, runtime_settings)
    _, refused = choose_runtime(sface, runtime_settings, CROP)
    assert "openvino-bf16:1" not in refused.ms
    write_gate(sface, replace(verdict, passed=True, reasons=[]), runtime_settings)
    assert read_gate(sface, "bf16", runtime_settings) is not None
    runtime, admitted = choose_runtime(sface, runtime_settings, CROP)  # a new key: a new trial
    assert "openvino-bf16:1" in admitted.ms or "bf16" in admitted.refused["openvino-bf16"]
    if admitted.backend == "openvino-bf16":
        assert isinstance(runtime, OpenVinoRuntime) and runtime.precision == "bf16"
