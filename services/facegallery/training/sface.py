"""SFace's pretrained graph as torch modules, for fine-tuning (``facegallery train --init sface``).

SFace (the 2021dec ONNX the default pack serves) is one chain: a scalar ``Sub`` and ``Mul``
(its own normalisation), 27 ``Conv -> BatchNormalization -> PRelu`` units (MobileFaceNet's
depthwise and pointwise convolutions, no residual additions), then ``BatchNormalization ->
Dropout -> Flatten -> Gemm -> BatchNormalization``. Each node maps onto one ``nn`` module with
its weights, checked node by node (attributes, a chain with no branches); anything else is
refused rather than approximated. onnx2torch would do this generally but needs torchvision,
which does not install beside this torch build.

The converted model takes the training input (RGB, ``(x - 127.5) / 127.5``) and rescales it to
SFace's own (``(x - 127.5) / 128``), so an export is an ``arcface``-family file like every
model trained here. ``convert_sface`` checks the result against ONNX Runtime on real crops.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper
from torch import nn

from facegallery.core.errors import FailedPrecondition
from facegallery.training.model import MEAN, STD, preprocess
from facegallery.training.validation import PARITY_COSINE, lowest_cosine

SFACE_DIM = 128


class Rescale(nn.Module):
    """``(x * STD + MEAN - subtract) * multiply``: the training input to the graph's own."""

    def __init__(self, subtract: float, multiply: float) -> None:
        super().__init__()
        self.subtract, self.multiply = subtract, multiply

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * STD + MEAN - self.subtract) * self.multiply


def sface_modules(path: Path) -> nn.Sequential:
    """The chain of ``path`` (an SFace-shaped ONNX graph) as an ``nn.Sequential``."""
    graph = onnx.load(str(path)).graph
    weights = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    nodes = list(graph.node)
    if [n.op_type for n in nodes[:2]] != ["Sub", "Mul"]:
        raise FailedPrecondition(f"{path.name} does not start with SFace's Sub/Mul")
    layers: list[nn.Module] = [
        Rescale(float(weights[nodes[0].input[1]].item()), float(weights[nodes[1].input[1]].item()))
    ]
    flat = False
    previous = nodes[1].output[0]
    for node in nodes[2:]:
        if node.input[0] != previous:
            raise FailedPrecondition(f"{path.name} is not a chain at {node.name or node.op_type}")
        previous = node.output[0]
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        tensors = [torch.from_numpy(weights[name].copy()) for name in node.input[1:]]
        layers.append(_module(node.op_type, attributes, tensors, flat, path.name))
        flat = flat or node.op_type == "Flatten"
    return nn.Sequential(*layers)


def _module(
    op: str, attributes: dict[str, Any], tensors: list[torch.Tensor], flat: bool, name: str
) -> nn.Module:
    if op == "Conv":
        weight = tensors[0]
        pads = list(attributes.get("pads", [0, 0, 0, 0]))
        if pads[:2] != pads[2:] or list(attributes.get("dilations", [1, 1])) != [1, 1]:
            raise FailedPrecondition(f"{name}: a Conv with asymmetric padding or dilation")
        group = int(attributes.get("group", 1))
        conv = nn.Conv2d(
            weight.shape[1] * group,
            weight.shape[0],
            (int(weight.shape[2]), int(weight.shape[3])),
            stride=tuple(attributes.get("strides", [1, 1])),
            padding=(pads[0], pads[1]),
            groups=group,
            bias=len(tensors) > 1,
        )
        conv.weight.data.copy_(weight)
        if conv.bias is not None:
            conv.bias.data.copy_(tensors[1])
        return conv
    if op == "BatchNormalization":
        gamma, beta, mean, var = tensors
        eps = float(attributes.get("epsilon", 1e-5))
        norm = (nn.BatchNorm1d if flat else nn.BatchNorm2d)(len(gamma), eps=eps)
        norm.weight.data.copy_(gamma)
        norm.bias.data.copy_(beta)
        for buffer, value in (("running_mean", mean), ("running_var", var)):
            getattr(norm, buffer).copy_(value)
        return norm
    if op == "PRelu":
        prelu = nn.PReLU(tensors[0].numel())
        prelu.weight.data.copy_(tensors[0].flatten())
        return prelu
    if op == "Dropout":
        return nn.Dropout(float(attributes.get("ratio", 0.5)))
    if op == "Flatten" and attributes.get("axis", 1) == 1:
        return nn.Flatten()
    if op == "Gemm" and attributes.get("transB") == 1 and not attributes.get("transA"):
        weight = tensors[0]
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=len(tensors) > 1)
        linear.weight.data.copy_(weight)
        if linear.bias is not None:
            linear.bias.data.copy_(tensors[1])
        return linear
    raise FailedPrecondition(f"{name}: no faithful conversion for {op} {attributes}")


def convert_sface(path: Path, crops: np.ndarray) -> nn.Sequential:
    """The converted model, refused unless it agrees with ONNX Runtime on ``crops`` (aligned
    BGR faces) to a cosine of ``PARITY_COSINE``."""
    model = sface_modules(path).eval()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rgb = np.ascontiguousarray(crops[:, :, :, ::-1].transpose(0, 3, 1, 2)).astype(np.float32)
    reference = session.run(None, {session.get_inputs()[0].name: rgb})[0]
    with torch.no_grad():
        converted = model(preprocess(crops)).numpy()
    cosine = lowest_cosine(reference, converted)
    if cosine < PARITY_COSINE:
        raise FailedPrecondition(
            f"SFace converted to torch disagrees with ONNX Runtime (lowest cosine "
            f"{cosine:.6f}); cannot fine-tune from it"
        )
    return model
