"""OpenCV DNN and OpenVINO as backends, and ``auto``: each forced backend agrees with ONNX
Runtime, a model OpenCV cannot run is refused clearly, the measured choice is cached and
reused, and a reduced precision admitted by its gate never makes the choice slower."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from facegallery.core.config import RuntimeSettings, Settings
from facegallery.core.errors import FailedPrecondition
from facegallery.models import ModelStore, PreparedModel
from facegallery.runtime import ShapeProfile, create_runtime
from facegallery.runtime.choice import (
    cache_key,
    choose_runtime,
    thread_candidates,
    usable_cores,
)
from facegallery.runtime.gates import gated_precisions
from facegallery.runtime.onnx import OnnxRuntime
from facegallery.runtime.opencv import OpenCvRuntime
from facegallery.runtime.openvino import OpenVinoRuntime

CROP = ShapeProfile((3, 112, 112), (3, 112, 112), (3, 112, 112), 8)
FRAME = ShapeProfile((3, 32, 32), (3, 480, 640), (3, 640, 640), 4)


BACKENDS: dict[str, type] = {
    "onnxruntime": OnnxRuntime,
    "opencv": OpenCvRuntime,
    "openvino": OpenVinoRuntime,
}


@pytest.mark.parametrize("backend", ["opencv", "openvino"])
@pytest.mark.parametrize(("index", "profile"), [(0, FRAME), (1, CROP)])
def test_each_backend_agrees_with_onnx_runtime(
    settings: Settings, index: int, profile: ShapeProfile, backend: str
) -> None:
    """The detector (dynamic canvas, named outputs) and the recognizer, at fp32."""
    model = ModelStore(settings.models).load_configured()[index]
    forced = create_runtime(model, RuntimeSettings(backend=backend), profile)
    assert isinstance(forced, BACKENDS[backend])
    assert forced.output_names == OnnxRuntime(model.path, RuntimeSettings()).output_names
    reference = OnnxRuntime(model.path, RuntimeSettings())
    batch = np.random.default_rng(1).uniform(0, 255, (3, *profile.opt_chw)).astype(np.float32)
    got, want = forced.run(batch), reference.run(batch)
    assert len(got) == len(want)
    tolerance = 1e-5 if backend == "openvino" else 1e-3  # OpenVINO fp32: within 3e-6 here
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape and np.abs(a - b).max() < tolerance


def test_what_opencv_cannot_run_is_refused_and_auto_skips_it(
    settings: Settings, tmp_path: Path
) -> None:
    sface = ModelStore(settings.models).load_configured()[1]
    with pytest.raises(FailedPrecondition, match="OpenCV DNN cannot run"):
        create_runtime(sface, RuntimeSettings(backend="opencv"), CROP).run(
            np.zeros((1, 3, 480, 640), np.float32)  # not the shape SFace takes
        )
    # Hardmax: ONNX Runtime runs it, OpenCV 5.0's importer does not know it.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Hardmax", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "hardmax.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    model = PreparedModel("hardmax", "sface", path, "hardmax-0", "test")
    small = ShapeProfile((3, 8, 8), (3, 8, 8), (3, 8, 8), 4)
    runtime, choice = choose_runtime(model, RuntimeSettings(engine_dir=tmp_path), small)
    assert choice.backend != "opencv" and isinstance(runtime, BACKENDS[choice.backend])
    assert "OpenCV DNN cannot run hardmax.onnx" in choice.refused["opencv"]


def test_auto_measures_once_then_reuses_the_cached_choice(
    settings: Settings, tmp_path: Path
) -> None:
    model = ModelStore(settings.models).load_configured()[1]
    # fp32 backends only (no reduced precision admitted: test_precision_gate.py has those)
    runtime_settings = RuntimeSettings(backend="auto", engine_dir=tmp_path, shipped_gates=False)
    runtime, choice = choose_runtime(model, runtime_settings, CROP)
    threads = sorted({1, usable_cores()})
    assert thread_candidates(runtime_settings) == threads
    assert set(choice.ms) == {f"{b}:{t}" for b in BACKENDS for t in threads}
    assert choice.refused == {}
    assert set(choice.ms["opencv:1"]) == {"1", "4"} and all(
        ms > 0 for per in choice.ms.values() for ms in per.values()
    )
    fastest = min(choice.ms, key=lambda b: sum(choice.ms[b].values()))
    assert f"{choice.backend}:{choice.threads}" == fastest
    assert isinstance(runtime, BACKENDS[choice.backend])

    cache = tmp_path / "backend-choice.json"
    stored = json.loads(cache.read_text())
    assert list(stored) == [cache_key(model, runtime_settings)]
    for other in set(BACKENDS) - {choice.backend}:
        verdict = stored[cache_key(model, runtime_settings)]
        verdict.update(backend=other, threads=3)  # a verdict we can recognise
        cache.write_text(json.dumps(stored))
        reused = create_runtime(model, runtime_settings, CROP)
        assert isinstance(reused, BACKENDS[other])
        assert _threads_of(reused) == 3


def test_auto_tries_bf16_only_where_admitted_beside_every_fp32_backend(
    settings: Settings, tmp_path: Path
) -> None:
    """Both models, as auto runs them here: bf16 is a candidate only where a gate verdict
    (shipped for this CPU's bf16 unit, or measured here) admits it, always beside every fp32
    backend, and the kept one is the fastest of that trial. With the OpenVINO plugin held to
    fp32 (no verdict counts, as on a CPU without bf16) the trial is what it was before bf16:
    fp32 backends only, the fastest kept, run at fp32."""
    for model in ModelStore(settings.models).load_configured():
        profile = CROP if model.family == "sface" else FRAME
        admitted = gated_precisions(model, RuntimeSettings(engine_dir=tmp_path))
        runtime_settings = RuntimeSettings(engine_dir=tmp_path / model.family)
        _, choice = choose_runtime(model, runtime_settings, profile)
        tried = {key.split(":")[0] for key in choice.ms}
        assert tried == set(BACKENDS) | {f"openvino-{p}" for p in admitted}
        fp32 = {key: per for key, per in choice.ms.items() if "-" not in key.split(":")[0]}
        kept = sum(choice.ms[f"{choice.backend}:{choice.threads}"].values())
        assert kept <= min(sum(per.values()) for per in fp32.values())
        held = runtime_settings.model_copy(
            update={"shipped_gates": False, "engine_dir": tmp_path / f"{model.family}-fp32"}
        )
        runtime, fp32_choice = choose_runtime(model, held, profile)
        assert {key.split(":")[0] for key in fp32_choice.ms} == set(BACKENDS)
        assert isinstance(runtime, BACKENDS[fp32_choice.backend])
        assert getattr(runtime, "precision", "f32") == "f32"


def _threads_of(runtime: object) -> int:
    if isinstance(runtime, OpenCvRuntime):
        return runtime.threads
    if isinstance(runtime, OpenVinoRuntime):
        return int(runtime.compiled.get_property("INFERENCE_NUM_THREADS"))
    assert isinstance(runtime, OnnxRuntime)
    return int(runtime.session.get_session_options().intra_op_num_threads)


def test_a_configured_thread_count_is_the_only_one_tried(
    settings: Settings, tmp_path: Path
) -> None:
    model = ModelStore(settings.models).load_configured()[1]
    pinned = RuntimeSettings(engine_dir=tmp_path, intra_op_threads=1, shipped_gates=False)
    assert cache_key(model, pinned) != cache_key(
        model, RuntimeSettings(engine_dir=tmp_path, shipped_gates=False)
    )
    _, choice = choose_runtime(model, pinned, CROP)
    assert choice.threads == 1 and set(choice.ms) == {f"{b}:1" for b in BACKENDS}


def test_each_opencv_net_runs_on_its_own_thread_count(settings: Settings) -> None:
    """OpenCV's pool is process-wide; each net sets its count for its own runs."""
    sface = ModelStore(settings.models).load_configured()[1]
    one, two = (OpenCvRuntime(sface.path, RuntimeSettings(intra_op_threads=n)) for n in (1, 2))
    batch = np.zeros((1, 3, 112, 112), np.float32)
    one.run(batch)
    assert cv2.getNumThreads() == 1
    two.run(batch)
    assert cv2.getNumThreads() == 2
    one.run(batch)
    assert cv2.getNumThreads() == 1
