"""dlib's face recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``, released
into the public domain by its author; LFW 99.38% as published), read from dlib's own
serialization and rebuilt as an ONNX graph, so that it runs on every backend the project has
(ONNX Runtime, OpenVINO, TensorRT) with a batch axis, and dlib itself is never needed at run
time (``dlib-bin`` only checks the converter's parity, in the tests).

The network (dlib's ``examples/dnn_face_recognition_ex.cpp``): a 150x150 RGB chip, less the
per-channel means and over 256; a 7x7/2 convolution of 32 filters, a 3x3/2 max pool; residual
blocks of two 3x3 convolutions at 32, 64, 128, 256 and 256 filters, each level after the
first opened by a block that halves the size (its shortcut a 2x2/2 average pool); a global
average pool and a
128-output fully connected layer without bias. Its affine layers (batch norm folded at
training time) are folded into the convolutions before them. Where a block's two operands
differ in size, dlib's ``add_prev`` adds them into the larger shape, the smaller one zero
padded at its end (channels, rows, columns): ``Pad`` then ``Add`` here. The descriptor is the
raw fully connected output, not unit length.

The file (read with ``dlib_serial``) is the loss layer, then every layer's version from the
output inwards, then the input layer, then each layer's details from the input outwards, each
followed by three bools and its (empty) gradient and output tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from facegallery.assets.artifacts import Distribution, PackagedFile
from facegallery.core.errors import FailedPrecondition
from facegallery.models.dlib_serial import DlibReader

FACE_RECOGNITION_MODELS = Distribution("face_recognition_models", "0.3.0", sdist=True)
SOURCE = PackagedFile(
    FACE_RECOGNITION_MODELS,
    "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
    "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
)
LICENCE = (
    "public domain (dlib-models: released into the public domain by Davis King); the "
    "face_recognition_models package: CC0 1.0"
)

CHIP_SIZE = 150
DESCRIPTOR_DIM = 128
INPUT_NAME = "chip"  # N x 3 x 150 x 150, RGB, 0-255
OUTPUT_NAME = "descriptor"  # N x 128, dlib's raw descriptor
OPSET = 17
IR_VERSION = 8  # opset 17's: what every backend here reads (not the onnx package's newest)

# The residual levels from the input outwards: (filters, blocks), the first block of every
# level but the first halving the size.
LEVELS = ((32, 3), (64, 4), (128, 3), (256, 3), (256, 1))


@dataclass
class Layer:
    """One computing layer's kind and weights, as the file gives them."""

    kind: str  # con, affine, relu, add_prev, max_pool, avg_pool, fc
    params: np.ndarray | None = None
    numbers: list[int] = field(default_factory=list)  # shape, strides, paddings


def _layer(reader: DlibReader) -> Layer:
    name = reader.text()
    kind = name.rstrip("_0123456789")
    if kind == "con":
        params = reader.tensor()
        numbers = [reader.integer() for _ in range(7)]  # filters, rows, cols, strides, pads
        reader.skip_aliases(2)
        reader.skip_reals(4)  # learning-rate and decay multipliers
        if name in ("con_5", "con_6"):
            _expect(reader, reader.flag(), True, "a convolution without bias")
        if name == "con_6":
            _expect(reader, reader.flag(), False, "a convolution with a fused relu")
        return Layer(kind, params, numbers)
    if kind == "affine":
        params = reader.tensor()
        reader.skip_aliases(2)
        _expect(reader, reader.integer(), 0, "an affine layer not per channel")
        if name == "affine_2":
            _expect(reader, reader.flag(), False, "a disabled affine layer")
        return Layer(kind, params)
    if kind in ("relu", "add_prev"):
        if name == "relu_2":
            _expect(reader, reader.flag(), False, "a disabled relu")
        return Layer(kind)
    if kind in ("max_pool", "avg_pool"):
        return Layer(kind, None, [reader.integer() for _ in range(6)])
    if kind == "fc":
        outputs, inputs = reader.integer(), reader.integer()
        params = reader.tensor()
        reader.skip_aliases(2)
        if reader.integer() != 1:  # dlib's FC_NO_BIAS, as in the published network
            raise reader.error("a fully connected layer with a bias")
        reader.skip_reals(4)
        if name == "fc_3":
            reader.flag()
        return Layer(kind, params, [outputs, inputs])
    raise reader.error(f"layer {name!r}")


def _expect(reader: DlibReader, value: object, expected: object, what: str) -> None:
    """Refuse a variant of a layer the published network does not use (converted as the
    usual one, it would give another network's descriptors)."""
    if value != expected:
        raise reader.error(what)


def _block_kinds(down: bool) -> list[str]:
    """A residual block's layers, outermost first, tags and skips included."""
    inner = ["affine", "con", "relu", "affine", "con", "tag"]
    if down:
        return ["relu", "add_prev", "avg_pool", "skip", "tag", *inner]
    return ["relu", "add_prev", *inner]


def _layer_kinds() -> list[str]:
    """Every layer of the network, outermost (the fully connected) first."""
    kinds = ["fc", "avg_pool"]
    for level, (_, blocks) in reversed(list(enumerate(LEVELS))):
        for block in reversed(range(blocks)):
            kinds += _block_kinds(down=level > 0 and block == 0)
    return [*kinds, "max_pool", "relu", "affine", "con"]


def read_network(data: bytes) -> tuple[np.ndarray, list[Layer]]:
    """The input's channel means and the computing layers from the input outwards."""
    reader = DlibReader(data, "dlib's face recognition network")
    if reader.integer() != 1 or reader.text() != "loss_metric_2":
        raise reader.error("loss layer (expected dlib's metric loss)")
    reader.real(), reader.real()  # margin, distance threshold
    kinds = _layer_kinds()
    versions = [reader.integer() for _ in kinds]
    # Tags and skips write version 1, other layers 2, the innermost (it holds the input) 3.
    expected = [1 if k in ("tag", "skip") else 2 for k in kinds[:-1]] + [3]
    if versions != expected:
        raise reader.error("layer versions (not the published network's layer stack)")
    if reader.text() != "input_rgb_image_sized":
        raise reader.error("input layer")
    means = np.array([reader.real() for _ in range(3)], dtype=np.float32)
    if (reader.integer(), reader.integer()) != (CHIP_SIZE, CHIP_SIZE):
        raise reader.error("chip size")
    layers = []
    for kind, version in reversed(list(zip(kinds, versions, strict=True))):
        if kind in ("tag", "skip"):
            continue
        layer = _layer(reader)
        if layer.kind != kind:
            raise reader.error(f"layer {layer.kind!r} where {kind!r} belongs")
        for _ in range(3):
            reader.flag()
        reader.tensor(), reader.tensor(), reader.tensor()  # gradients, cached output
        if version == 3:  # the innermost layer: its sample expansion factor
            reader.integer()
        layers.append(layer)
    reader.end()
    return means, layers


class _Graph:
    """The ONNX graph, built node by node from the input outwards."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.weights: list[onnx.TensorProto] = []
        self.count = 0

    def constant(self, value: np.ndarray) -> str:
        name = f"w{len(self.weights)}"
        self.weights.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], **attributes: Any) -> str:
        self.count += 1
        output = f"{op.lower()}{self.count}"
        self.nodes.append(helper.make_node(op, inputs, [output], **attributes))
        return output


@dataclass
class _Value:
    """A tensor of the graph and its shape (channels, rows, cols), to pad residual sums."""

    name: str
    channels: int
    size: int


def _conv(graph: _Graph, x: _Value, con: Layer, affine: Layer) -> _Value:
    filters, rows, cols, stride_y, stride_x, pad_y, pad_x = con.numbers
    assert con.params is not None and affine.params is not None
    flat = con.params.reshape(-1)
    kernel = flat[: filters * x.channels * rows * cols].reshape(filters, x.channels, rows, cols)
    bias = flat[filters * x.channels * rows * cols :]
    if bias.size == 0:  # a convolution without bias (dlib's use_bias off)
        bias = np.zeros(filters, dtype=np.float32)
    gamma, beta = affine.params.reshape(2, filters)
    weights = (kernel * gamma[:, None, None, None]).astype(np.float32)
    out = graph.node(
        "Conv",
        [x.name, graph.constant(weights), graph.constant((bias * gamma + beta).astype(np.float32))],
        kernel_shape=[rows, cols],
        strides=[stride_y, stride_x],
        pads=[pad_y, pad_x, pad_y, pad_x],
    )
    return _Value(out, filters, _out_size(x.size, rows, stride_y, pad_y))


def _pool(graph: _Graph, x: _Value, pool: Layer) -> _Value:
    rows, cols, stride_y, stride_x, pad_y, pad_x = pool.numbers
    if rows == 0:  # dlib's global pool
        return _Value(graph.node("GlobalAveragePool", [x.name]), x.channels, 1)
    op = "MaxPool" if pool.kind == "max_pool" else "AveragePool"
    out = graph.node(
        op,
        [x.name],
        kernel_shape=[rows, cols],
        strides=[stride_y, stride_x],
        pads=[pad_y, pad_x, pad_y, pad_x],
    )
    return _Value(out, x.channels, _out_size(x.size, rows, stride_y, pad_y))


def _out_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """A window's output side (dlib's and ONNX's alike: no ceil mode)."""
    return (size + 2 * pad - kernel) // stride + 1


def _padded(graph: _Graph, x: _Value, channels: int, size: int) -> str:
    if (x.channels, x.size) == (channels, size):
        return x.name
    grow = size - x.size
    pads = np.array([0, 0, 0, 0, 0, channels - x.channels, grow, grow], dtype=np.int64)
    return graph.node("Pad", [x.name, graph.constant(pads)], mode="constant")


def to_onnx(data: bytes) -> onnx.ModelProto:
    """The network of a ``.dat`` file as an ONNX model: ``chip`` (N x 3 x 150 x 150 RGB,
    0-255, float32) -> ``descriptor`` (N x 128)."""
    means, layers = read_network(data)
    queue = iter(layers)
    graph = _Graph()
    scale = np.full((1, 3, 1, 1), 1 / 256, dtype=np.float32)
    centred = graph.node("Sub", [INPUT_NAME, graph.constant(means.reshape(1, 3, 1, 1))])
    x = _Value(graph.node("Mul", [centred, graph.constant(scale)]), 3, CHIP_SIZE)

    def take(kind: str) -> Layer:
        layer = next(queue)
        assert layer.kind == kind, (layer.kind, kind)
        return layer

    x = _conv(graph, x, take("con"), take("affine"))
    take("relu")
    x = _relu(graph, x)
    x = _pool(graph, x, take("max_pool"))
    for level, (filters, blocks) in enumerate(LEVELS):
        for block in range(blocks):
            down = level > 0 and block == 0
            inner = _conv(graph, x, take("con"), take("affine"))
            take("relu")
            inner = _conv(graph, _relu(graph, inner), take("con"), take("affine"))
            if inner.channels != filters:
                raise FailedPrecondition(
                    f"not dlib's face recognition network: {inner.channels} filters where "
                    f"its level {level} has {filters}"
                )
            shortcut = _pool(graph, x, take("avg_pool")) if down else x
            take("add_prev")
            channels = max(inner.channels, shortcut.channels)
            size = max(inner.size, shortcut.size)
            total = graph.node(
                "Add",
                [
                    _padded(graph, inner, channels, size),
                    _padded(graph, shortcut, channels, size),
                ],
            )
            take("relu")
            x = _relu(graph, _Value(total, channels, size))
    x = _pool(graph, x, take("avg_pool"))
    fc = take("fc")
    assert fc.params is not None
    outputs, inputs = fc.numbers
    flat = graph.node("Flatten", [x.name], axis=1)
    weights = fc.params.reshape(inputs, outputs).astype(np.float32)
    graph.nodes.append(helper.make_node("MatMul", [flat, graph.constant(weights)], [OUTPUT_NAME]))
    model = helper.make_model(
        helper.make_graph(
            graph.nodes,
            "dlib_face_recognition_resnet_model_v1",
            [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 3, 150, 150])],
            [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", outputs])],
            graph.weights,
        ),
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="facegallery.models.dlib_resnet",
        ir_version=IR_VERSION,
    )
    onnx.checker.check_model(model)
    return model


def _relu(graph: _Graph, x: _Value) -> _Value:
    return _Value(graph.node("Relu", [x.name]), x.channels, x.size)
