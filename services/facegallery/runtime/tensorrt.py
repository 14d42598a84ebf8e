"""TensorRT backend: FP16 engines built from the prepared ONNX with a dynamic batch profile.

TensorRT is not installable from the package registries; this module imports it lazily and
works where an operator's image provides it (e.g. an NVIDIA TensorRT base image). Device
buffers and the CUDA stream come from PyTorch, which such images carry. Engines are cached
by model id, GPU name, TensorRT version and profile: an engine is only valid for all four.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np

from facegallery.core.config import RuntimeSettings
from facegallery.core.errors import FailedPrecondition
from facegallery.models import PreparedModel
from facegallery.runtime.base import ShapeProfile


def tensorrt_unavailable_reason() -> str | None:
    """Why TensorRT cannot run here, or None when it can."""
    try:
        import tensorrt  # noqa: F401
        import torch
    except ImportError as exc:
        return f"TensorRT backend needs the tensorrt and torch packages: {exc}"
    if not torch.cuda.is_available():
        return "TensorRT backend needs a CUDA GPU; torch sees none"
    return None


class TensorRTRuntime:
    """One engine and execution context for one prepared model."""

    def __init__(self, model: PreparedModel, settings: RuntimeSettings, profile: ShapeProfile):
        reason = tensorrt_unavailable_reason()
        if reason is not None:
            raise FailedPrecondition(reason)
        import tensorrt as trt
        import torch

        self._torch = torch
        self._logger = trt.Logger(trt.Logger.WARNING)
        path = self._engine_path(model, settings, profile, trt.__version__)
        if not path.is_file():
            self._build(model.path, path, settings.tensorrt_fp16, profile)
        runtime = trt.Runtime(self._logger)
        self.engine: Any = runtime.deserialize_cuda_engine(path.read_bytes())
        self.context: Any = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.input_name = inputs[0]
        self.output_names = [n for n in names if n not in inputs]
        self.engine_path = path

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        torch = self._torch
        device_input = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).cuda()
        self.context.set_input_shape(self.input_name, tuple(batch.shape))
        self.context.set_tensor_address(self.input_name, device_input.data_ptr())
        outputs = []
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            out = torch.empty(shape, dtype=torch.float32, device="cuda")
            self.context.set_tensor_address(name, out.data_ptr())
            outputs.append(out)
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise FailedPrecondition("TensorRT execution failed")
        stream.synchronize()
        return [o.cpu().numpy() for o in outputs]

    def _engine_path(
        self, model: PreparedModel, settings: RuntimeSettings, profile: ShapeProfile, version: str
    ) -> Path:
        gpu = re.sub(r"[^A-Za-z0-9]+", "-", self._torch.cuda.get_device_name()).strip("-")
        key = f"{profile}-fp16={settings.tensorrt_fp16}".encode()
        suffix = hashlib.sha256(key).hexdigest()[:8]
        name = f"{model.model_id}-{gpu}-trt{version}-{suffix}.engine"
        return settings.engine_dir.expanduser() / name

    def _build(self, onnx_path: Path, engine_path: Path, fp16: bool, profile: ShapeProfile) -> None:
        import tensorrt as trt

        builder = trt.Builder(self._logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse(onnx_path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise FailedPrecondition(f"TensorRT could not parse {onnx_path}: {errors}")
        config = builder.create_builder_config()
        if fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        opt_batch = max(1, profile.max_batch // 2)
        trt_profile = builder.create_optimization_profile()
        trt_profile.set_shape(
            network.get_input(0).name,
            (1, *profile.min_chw),
            (opt_batch, *profile.opt_chw),
            (profile.max_batch, *profile.max_chw),
        )
        config.add_optimization_profile(trt_profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise FailedPrecondition(f"TensorRT could not build an engine for {onnx_path}")
        engine_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = engine_path.with_name(engine_path.name + ".part")
        tmp.write_bytes(bytes(serialized))
        tmp.replace(engine_path)
