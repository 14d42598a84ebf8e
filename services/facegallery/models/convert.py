"""Turn a shipped ONNX file into the graph we serve, and prove the outputs did not change.

Shipped files are exported for one image at a time: a fixed batch of 1 (YuNet also a fixed
640x640 canvas with batch 1 baked into its Reshape constants) and, for SFace, weights listed as
graph inputs, which stops ONNX Runtime from constant-folding them. Serving batches across
requests, so every model gets a symbolic batch axis; YuNet also a symbolic height and width.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from facegallery.core.config import ChipRecognizerFamily, DetectorFamily, RecognizerFamily
from facegallery.core.errors import FailedPrecondition

OnnxFamily = DetectorFamily | RecognizerFamily | ChipRecognizerFamily

# Shapes used to compare the shipped and the prepared graph where the shipped one is symbolic.
_CHECK_SHAPES: dict[str, tuple[int, int, int]] = {
    "yunet": (3, 640, 640),
    "scrfd": (3, 640, 640),
    "sface": (3, 112, 112),
    "arcface": (3, 112, 112),
    "dlib": (3, 150, 150),
}
_DETECTORS = ("yunet", "scrfd")


def prepare_graph(model: onnx.ModelProto, family: OnnxFamily) -> onnx.ModelProto:
    """A copy of ``model`` with weights as initializers and dynamic batch (and YuNet H/W)."""
    prepared = onnx.ModelProto()
    prepared.CopyFrom(model)
    _weights_to_initializers(prepared.graph)
    del prepared.graph.value_info[:]  # stale intermediate shapes from the fixed export
    _set_dim(prepared.graph.input[0], 0, "batch")
    for output in prepared.graph.output:
        _set_dim(output, 0, "batch")
    if family == "yunet":
        _set_dim(prepared.graph.input[0], 2, "height")
        _set_dim(prepared.graph.input[0], 3, "width")
        for output in prepared.graph.output:
            _set_dim(output, 1, f"anchors_{output.name}")
        _copy_batch_in_reshapes(prepared.graph)
    onnx.checker.check_model(prepared)
    return prepared


def verify_prepared(original: bytes, prepared: bytes, family: OnnxFamily) -> None:
    """Raise unless the prepared graph computes what the original does, and batches honestly.

    Compares (1) both graphs on the original's input shape, (2) a batch of two against the two
    images run alone, and for YuNet (3) the same at a non-square 480x640 canvas.
    """
    reference = _session(original)
    candidate = _session(prepared)
    rng = np.random.default_rng(0)
    shape = _input_shape(reference, family)
    one = rng.uniform(0, 255, size=(1, *shape)).astype(np.float32)
    _assert_close(_run(reference, one), _run(candidate, one), "original vs prepared")

    two = rng.uniform(0, 255, size=(2, *shape)).astype(np.float32)
    _assert_batch_consistent(candidate, two)
    if family == "yunet":
        _assert_batch_consistent(candidate, rng.uniform(0, 255, (2, 3, 480, 640)).astype("f4"))


def _weights_to_initializers(graph: onnx.GraphProto) -> None:
    initializers = {init.name for init in graph.initializer}
    keep = [inp for inp in graph.input if inp.name not in initializers]
    del graph.input[:]
    graph.input.extend(keep)
    if len(keep) != 1:
        raise FailedPrecondition(f"expected one image input, the graph has {len(keep)}")


def _set_dim(value: onnx.ValueInfoProto, axis: int, name: str) -> None:
    dims = value.type.tensor_type.shape.dim
    if axis < len(dims):
        dims[axis].ClearField("dim_value")
        dims[axis].dim_param = name


def _copy_batch_in_reshapes(graph: onnx.GraphProto) -> None:
    """Reshape targets like [1, -1, 4] fold a batch of N into one image; 0 copies the input's
    batch dimension instead."""
    shape_inputs = {node.input[1] for node in graph.node if node.op_type == "Reshape"}
    for init in graph.initializer:
        if init.name in shape_inputs:
            target = numpy_helper.to_array(init).copy()
            if target.ndim == 1 and target.size >= 2 and target[0] == 1:
                target[0] = 0
                init.CopyFrom(numpy_helper.from_array(target, init.name))


def _session(model: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _input_shape(session: ort.InferenceSession, family: OnnxFamily) -> tuple[int, ...]:
    declared = session.get_inputs()[0].shape[1:]
    fallback = _CHECK_SHAPES[family]
    return tuple(d if isinstance(d, int) else f for d, f in zip(declared, fallback, strict=True))


def _run(session: ort.InferenceSession, batch: np.ndarray) -> list[np.ndarray]:
    name = session.get_inputs()[0].name
    return [np.asarray(o) for o in session.run(None, {name: batch})]


def _assert_close(expected: list[np.ndarray], actual: list[np.ndarray], what: str) -> None:
    for e, a in zip(expected, actual, strict=True):
        if e.shape != a.shape:
            raise FailedPrecondition(f"{what}: output shape {a.shape} != {e.shape}")
        tolerance = 1e-4 * (1.0 + float(np.abs(e).max()))
        error = float(np.abs(e - a).max())
        if error > tolerance:
            raise FailedPrecondition(f"{what}: outputs differ by {error:.3g} > {tolerance:.3g}")


def _assert_batch_consistent(session: ort.InferenceSession, batch: np.ndarray) -> None:
    together = _run(session, batch)
    for i in range(batch.shape[0]):
        alone = _run(session, batch[i : i + 1])
        _assert_close(alone, [o[i : i + 1] for o in together], f"batch item {i} vs alone")
