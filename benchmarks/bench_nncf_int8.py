"""Does OpenVINO's own int8 (NNCF post-training quantization) pay for SFace, beside bf16, and
does it pass the precision gate? Issue 33, item 3: ship it only if it passes the gate that
bf16 passed and is faster than bf16.

NNCF quantizes the prepared SFace for OpenVINO's CPU plugin (the same file ``runtime.backend
auto`` runs), calibrated on aligned crops that the product's own detector and alignment made
from ``celeba_train`` people, with their mirror images (flip averaging embeds both), never
from an evaluation set. Two recipes: NNCF's mixed preset on every layer, and the same with
the layers nearest the pixels and the embedding (the first convolution and the fully
connected layer) kept in float, the usual ignored scope for a sensitive network. Measured in
the same run: faces/s at batch 1, 20 (a 10-face frame with flip averaging) and 32, for
OpenVINO at fp32, at bf16 (where the CPU has it) and each int8 model, the runs taking turns;
then the precision gate of ``facegallery eval precision-gate`` on celeba_150 for each.

    .venv/bin/python -m pip install -e '.[bench]'   # nncf
    .venv/bin/python benchmarks/bench_nncf_int8.py --json benchmarks/results/int8-nncf.json
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from bench_int8 import aligned_crops, faces_per_s, network_input
from facegallery.core.config import Settings, load_settings
from facegallery.evaluation.pairs import Pair, read_pairs
from facegallery.evaluation.precision_gate import face_crops, run_gate
from facegallery.models import ModelStore
from facegallery.models.specs import SFACE_2021DEC
from facegallery.runtime.choice import usable_cores
from facegallery.runtime.hardware import bf16_unit, openvino_version
from facegallery.runtime.onnx import OnnxRuntime
from facegallery.vision.embed import Embedder
from facegallery.vision.pipeline import FaceFinder, FacePipeline
from report import FACES, emit

CALIBRATION = 300  # celeba_train people, one crop each, and each crop's mirror image
BATCHES = (1, 20, 32)
KEPT_IN_FLOAT = ["conv_1_conv2d", "pre_fc1"]  # SFace's first convolution and its FC layer


class Compiled:
    """An OpenVINO compiled model behind the runtimes' ``run(batch)`` protocol."""

    def __init__(self, model: ov.Model, threads: int, precision: str) -> None:
        config: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": threads,
            "INFERENCE_PRECISION_HINT": precision,
        }
        self.compiled = ov.Core().compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.output_names = [self.compiled.outputs[0].get_any_name()]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        result = self.request.infer([np.ascontiguousarray(batch, dtype=np.float32)])
        return [np.asarray(result[self.compiled.outputs[0]])]

    def first_output(self, batch: np.ndarray) -> np.ndarray:
        return self.run(batch)[0]


def quantized(path: Path, calibration: np.ndarray) -> dict[str, ov.Model]:
    import nncf

    data = nncf.Dataset([calibration[i : i + 1] for i in range(len(calibration))])
    common = {"preset": nncf.QuantizationPreset.MIXED, "subset_size": len(calibration)}
    return {
        "int8 mixed": nncf.quantize(ov.Core().read_model(path), data, **common),
        "int8 mixed, first conv and FC in float": nncf.quantize(
            ov.Core().read_model(path),
            data,
            ignored_scope=nncf.IgnoredScope(names=KEPT_IN_FLOAT),
            **common,
        ),
    }


def gate_pairs(settings: Settings) -> tuple[list[Pair], dict[str, np.ndarray | None]]:
    """celeba_150's pairs and each image's largest face, found by YuNet at fp32 on ONNX
    Runtime, as the gate command finds them."""
    pipeline = FacePipeline.from_settings(settings)
    yunet = ModelStore(settings.models).load_configured()[0]
    found_by = pipeline.detector.on_runtime(OnnxRuntime(yunet.path, settings.runtime))
    root = FACES / "celeba_150"
    pairs = read_pairs(root / "pairs.csv")
    return pairs, face_crops(FaceFinder(found_by, settings), root, pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = parser.parse_args()
    settings = load_settings()
    settings.embed.flip_tta = False  # as the gate judges
    threads = settings.runtime.intra_op_threads or usable_cores()
    sface = ModelStore(settings.models).load(SFACE_2021DEC)
    crops = aligned_crops(settings, FACES / "celeba_train", CALIBRATION, seed=0)
    calibration = network_input(np.concatenate([crops, crops[:, :, ::-1]]))
    runtimes = {"fp32": Compiled(ov.Core().read_model(sface.path), threads, "f32")}
    if bf16_unit() != "none":
        runtimes["bf16"] = Compiled(ov.Core().read_model(sface.path), threads, "bf16")
    for name, model in quantized(sface.path, calibration).items():
        # f32: the layers left in float run at fp32, not at the plugin's default (bf16 on a
        # CPU that has it), so each row is one precision
        runtimes[name] = Compiled(model, threads, "f32")
    batch = calibration[: max(BATCHES)]
    rounds: dict[str, dict[int, list[float]]] = {n: {b: [] for b in BATCHES} for n in runtimes}
    for _ in range(3):  # the runtimes take turns, so drift hits them alike
        for name, runtime in runtimes.items():
            for size in BATCHES:
                rate = faces_per_s(runtime.first_output, batch[:size], args.seconds)
                rounds[name][size].append(rate)
    pairs, gate_crops = gate_pairs(settings)
    reference = Embedder(
        OnnxRuntime(sface.path, settings.runtime), "sface", settings.embed, sface.model_id
    )
    results: dict[str, Any] = {
        "versions": {"openvino": openvino_version()},
        "bf16_unit": bf16_unit(),
        "threads": threads,
        "calibration_crops": len(calibration),
    }
    for name, runtime in runtimes.items():
        verdict = run_gate(
            gate_crops, pairs, reference, reference.on_runtime(runtime), name, "celeba_150"
        )
        results[name] = {
            f"batch_{size}_faces_per_s": float(np.median(rates))
            for size, rates in rounds[name].items()
        } | {"gate": asdict(verdict)}
    emit(results, args.json)


if __name__ == "__main__":
    main()
