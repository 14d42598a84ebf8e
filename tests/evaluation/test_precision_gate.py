"""The precision gate on a real development set (celeba_150's pairs, identity-disjoint from
the recognizer's training data): for the recognizer and the detector, the same model at fp32
on another runtime passes and a deliberately degraded model is refused with its reasons;
bf16 is judged here as the shipped verdicts say (the cross-precision pairs, in CI on this
machine kind); only a passing verdict makes a reduced precision one of ``auto``'s
candidates, and a verdict measured here comes before a shipped one."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from facegallery.core.config import RuntimeSettings, Settings
from facegallery.core.errors import FailedPrecondition, InvalidInput
from facegallery.evaluation.pairs import Pair, read_pairs
from facegallery.evaluation.precision_gate import (
    Faces,
    MovedOnePixel,
    face_crops,
    pair_faces,
    run_detector_gate,
    run_gate,
)
from facegallery.models import ModelStore
from facegallery.runtime import ShapeProfile
from facegallery.runtime.choice import choose_runtime
from facegallery.runtime.gates import (
    GateVerdict,
    find_gate,
    gate_key,
    gated_precisions,
    read_gate,
    shipped_verdicts,
    write_gate,
)
from facegallery.runtime.hardware import bf16_unit
from facegallery.runtime.onnx import OnnxRuntime
from facegallery.runtime.openvino import OpenVinoRuntime
from facegallery.vision.detect import Detector
from facegallery.vision.embed import Embedder
from facegallery.vision.pipeline import FaceFinder, FacePipeline

pytestmark = pytest.mark.slow

CELEBA = Path(__file__).resolve().parents[3] / "shared" / "faces" / "celeba_150"
RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
CROP = ShapeProfile((3, 112, 112), (3, 112, 112), (3, 112, 112), 8)


def _degraded(path: Path, out: Path) -> Path:
    """The model with 10% multiplicative noise on its convolutions' weights: the same graph,
    a worse model (SFace's embeddings about 0.7 in cosine from the original's), which is what
    a broken precision would look like to a gallery."""
    model = onnx.load(str(path))
    rng = np.random.default_rng(0)
    for init in model.graph.initializer:
        weights = numpy_helper.to_array(init)
        if weights.dtype == np.float32 and weights.ndim == 4:
            noisy = weights * (1 + 0.1 * rng.standard_normal(weights.shape)).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(noisy, init.name))
    onnx.save(model, str(out))
    return out


@pytest.fixture(scope="module")
def pairs() -> list[Pair]:
    return read_pairs(CELEBA / "pairs.csv")


@pytest.fixture(scope="module")
def found_by(pipeline: FacePipeline, settings: Settings) -> Detector:
    """The reference detector: YuNet at fp32 on ONNX Runtime, whatever auto picked here."""
    yunet = ModelStore(settings.models).load_configured()[0]
    return pipeline.detector.on_runtime(OnnxRuntime(yunet.path, settings.runtime))


@pytest.fixture(scope="module")
def crops(
    found_by: Detector, settings: Settings, pairs: list[Pair]
) -> dict[str, np.ndarray | None]:
    return face_crops(FaceFinder(found_by, settings), CELEBA, pairs)


@pytest.fixture(scope="module")
def fp32_embedder(settings: Settings) -> Embedder:
    """The reference recognizer as the gate judges: SFace at fp32 on ONNX Runtime, no flip."""
    sface = ModelStore(settings.models).load_configured()[1]
    no_flip = settings.embed.model_copy(update={"flip_tta": False})
    return Embedder(OnnxRuntime(sface.path, settings.runtime), "sface", no_flip, sface.model_id)


def test_the_gate_passes_a_faithful_runtime_and_refuses_a_degraded_model(
    settings: Settings,
    fp32_embedder: Embedder,
    pairs: list[Pair],
    crops: dict[str, np.ndarray | None],
    tmp_path: Path,
) -> None:
    """The reference is fp32 on ONNX Runtime; the same model at fp32 on OpenVINO is another
    runtime with the same space (passes), a noisy copy of the model is not (refused)."""
    sface = ModelStore(settings.models).load_configured()[1]
    reference = fp32_embedder
    same_model = reference.on_runtime(OpenVinoRuntime(sface.path, settings.runtime))
    faithful = run_gate(crops, pairs, reference, same_model, "f32", CELEBA.name)
    assert faithful.passed and faithful.reasons == []
    assert faithful.agreement["min"] > 0.9999
    assert faithful.fp32["accuracy_mean"] > 0.9  # the set really measures something
    assert faithful.fp32["far_at_that_threshold"] <= 1e-3
    broken = _degraded(sface.path, tmp_path / "degraded.onnx")
    worse = reference.on_runtime(OpenVinoRuntime(broken, settings.runtime))
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


@pytest.fixture(scope="module")
def reference_faces(found_by: Detector, settings: Settings, pairs: list[Pair]) -> Faces:
    return pair_faces(FaceFinder(found_by, settings), CELEBA, pairs)


@pytest.fixture(scope="module")
def moved_faces(found_by: Detector, settings: Settings, pairs: list[Pair]) -> Faces:
    return pair_faces(MovedOnePixel(found_by, settings), CELEBA, pairs)


def _detector_judged(
    path: Path,
    precision: str,
    found_by: Detector,
    embedder: Embedder,
    reference: Faces,
    moved: Faces,
    settings: Settings,
    pairs: list[Pair],
) -> GateVerdict:
    """The detector gate on YuNet's file ``path`` run by OpenVINO at ``precision``."""
    other = found_by.on_runtime(OpenVinoRuntime(path, settings.runtime, precision))
    found = pair_faces(FaceFinder(other, settings), CELEBA, pairs)
    model_id = found_by.model_id
    return run_detector_gate(
        reference, found, moved, pairs, embedder, model_id, precision, CELEBA.name
    )


def test_the_detector_gate_passes_a_faithful_runtime_and_refuses_a_degraded_detector(
    settings: Settings,
    found_by: Detector,
    fp32_embedder: Embedder,
    reference_faces: Faces,
    moved_faces: Faces,
    pairs: list[Pair],
    tmp_path: Path,
) -> None:
    """End to end: faces found by YuNet at fp32 on OpenVINO align as ONNX Runtime's do
    (no landmark moves, the same pairs); a YuNet with noisy convolutions moves its landmarks
    further than a one-pixel move of the image does, and is refused for it."""
    yunet = ModelStore(settings.models).load_configured()[0]
    shared = (found_by, fp32_embedder, reference_faces, moved_faces, settings, pairs)
    faithful = _detector_judged(yunet.path, "f32", *shared)
    assert faithful.passed and faithful.reasons == []
    assert faithful.agreement["landmark_px_p99"] < 0.01
    assert faithful.agreement["moved_one_pixel_shift_p99"] > 0.01  # the bound is not zero
    assert faithful.agreement["faces_at_one_only"] == 0
    degraded = _degraded(yunet.path, tmp_path / "degraded-yunet.onnx")
    refused = _detector_judged(degraded, "f32", *shared)
    assert not refused.passed
    assert any(r.startswith("landmarks: 99th percentile") for r in refused.reasons)
    assert refused.fp32 == faithful.fp32


def test_bf16_is_judged_here_as_measured_for_this_machine_kind(
    settings: Settings,
    found_by: Detector,
    fp32_embedder: Embedder,
    reference_faces: Faces,
    moved_faces: Faces,
    pairs: list[Pair],
    crops: dict[str, np.ndarray | None],
) -> None:
    """The cross-precision pairs at bf16, measured now for both models: a gallery made at
    fp32 and probes at bf16 (and the reverse, and both) judged at fp32's thresholds. On the
    machine kind the verdicts were measured for (this OpenVINO version and bf16 unit: where
    SFace's verdict ships), the gate decides as measured, on the same figures: SFace's shipped
    verdict, and YuNet's committed one (passed, not shipped: docs/benchmarks.md "Speed"). A
    CPU without bf16 refuses the precision."""
    yunet, sface = ModelStore(settings.models).load_configured()
    if bf16_unit() == "none":
        with pytest.raises(FailedPrecondition, match="bf16"):
            OpenVinoRuntime(sface.path, settings.runtime, "bf16")
        return
    bf16 = fp32_embedder.on_runtime(OpenVinoRuntime(sface.path, settings.runtime, "bf16"))
    shared = (found_by, fp32_embedder, reference_faces, moved_faces, settings, pairs)
    recognizer = run_gate(crops, pairs, fp32_embedder, bf16, "bf16", CELEBA.name)
    detector = _detector_judged(yunet.path, "bf16", *shared)
    assert recognizer.agreement["min"] < 1.0  # bf16 really ran: the embeddings moved
    assert detector.agreement["landmark_px_median"] > 0.0  # and the landmarks
    shipped = shipped_verdicts().get(gate_key(sface, "bf16"))
    if shipped is None:  # another OpenVINO or bf16 unit: nothing measured to compare with
        return
    committed = json.loads((RESULTS / "precision-gate-detector-bf16.json").read_text())
    for verdict, measured in ((recognizer, shipped), (detector, committed)):
        assert verdict.passed == measured["passed"], verdict.model_id
        for case, rates in verdict.cross.items():
            for name, value in rates.items():
                assert value == pytest.approx(measured["cross"][case][name], abs=0.001)


def test_a_verdict_measured_here_comes_before_the_shipped_one(
    settings: Settings, tmp_path: Path
) -> None:
    """Every shipped verdict names what it was measured for; a verdict written here rules
    over it, and with ``runtime.shipped_gates`` off only verdicts written here count."""
    shipped = shipped_verdicts()
    assert shipped, "facegallery ships the gate's verdicts of its own machines"
    for key, verdict in shipped.items():
        model_id, precision, version, unit = key.split()
        assert verdict["model_id"] == model_id and verdict["precision"] == precision
        assert version.startswith("ov=") and unit in ("unit=avx512_bf16", "unit=amx")
        assert verdict["passed"] is (verdict["reasons"] == [])
    sface = ModelStore(settings.models).load_configured()[1]
    here = RuntimeSettings(engine_dir=tmp_path)
    found = find_gate(sface, "bf16", here)
    assert (found[1] if found else None) == (
        "shipped" if gate_key(sface, "bf16") in shipped else None
    )
    assert find_gate(sface, "bf16", here.model_copy(update={"shipped_gates": False})) is None
    refused = GateVerdict(sface.model_id, "bf16", False, ["a drop"], "mine", 0.001, {}, {}, {})
    write_gate(sface, refused, here)
    assert find_gate(sface, "bf16", here) == (refused, "here")
    assert gated_precisions(sface, here) == []
