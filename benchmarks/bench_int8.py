"""Does an int8 SFace pay on this CPU? ONNX Runtime static quantization, measured, not assumed.

The prepared SFace (opset 11) is converted to opset 13 (per-channel quantization needs it)
and quantized by ``onnxruntime.quantization.quantize_static`` in both of ONNX Runtime's
formats (QDQ and QOperator), weights per channel, calibrated (MinMax) on aligned crops that
the product's own detector and alignment made from ``celeba_train`` people, never from an
evaluation set. Measured in the same run on other ``celeba_train`` crops: faces/s at batch 1
and 32 against the fp32 model on ONNX Runtime and on OpenCV's DNN (what ``runtime.backend:
auto`` picks for SFace on this machine kind), and the cosine between each int8 embedding and
its fp32 one. The issue's accuracy gate (``eval pairs`` within 0.1 point) is run on
``celeba_150`` and ``att_orl`` with ``--pairs-gate``, through the real pipeline with the int8
file as the recognizer.

    .venv/bin/python benchmarks/bench_int8.py --json benchmarks/results/int8.json
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from onnx import version_converter
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from facegallery.core.config import Settings, load_settings
from facegallery.evaluation.pairs import read_pairs
from facegallery.evaluation.runner import evaluate_pairs
from facegallery.models import ModelStore
from facegallery.models.specs import SFACE_2021DEC
from facegallery.vision.pipeline import FacePipeline
from report import FACES, emit

Run = Callable[[np.ndarray], np.ndarray]
CALIBRATION, HELD_BACK = 200, 200  # crops: quantization calibration / speed and agreement


def aligned_crops(settings: Settings, root: Path, people: int, seed: int) -> np.ndarray:
    """The largest face of the first photo of ``people`` seeded identities, aligned 112x112."""
    pipeline = FacePipeline.from_settings(settings)
    folders = sorted(d for d in root.iterdir() if d.is_dir())
    random.Random(seed).shuffle(folders)
    crops: list[np.ndarray] = []
    for folder in folders[:people]:
        image = pipeline.decode(sorted(folder.iterdir())[0].read_bytes())
        faces = pipeline.detect_and_align([image], largest_only=True)[0]
        crops.extend(face.crop for face in faces)
    return np.stack(crops)


def network_input(crops: np.ndarray) -> np.ndarray:
    """BGR uint8 crops -> the RGB float NCHW batch SFace takes (it normalises inside)."""
    return np.ascontiguousarray(crops[:, :, :, ::-1].transpose(0, 3, 1, 2).astype(np.float32))


class Crops(CalibrationDataReader):  # type: ignore[misc]
    """One crop per calibration step."""

    def __init__(self, name: str, batch: np.ndarray) -> None:
        self._items = iter([{name: batch[i : i + 1]} for i in range(len(batch))])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)


def quantize(fp32: Path, calibration: np.ndarray, fmt: QuantFormat, out: Path) -> Path:
    scratch = out.with_name(out.stem + "-opset13.onnx")
    onnx.save(version_converter.convert_version(onnx.load(fp32), 13), scratch)
    quant_pre_process(str(scratch), str(scratch), skip_symbolic_shape=True)
    name = ort.InferenceSession(scratch, providers=["CPUExecutionProvider"]).get_inputs()[0].name
    quantize_static(
        str(scratch),
        str(out),
        Crops(name, calibration),
        quant_format=fmt,
        per_channel=True,
        activation_type=QuantType.QUInt8 if fmt == QuantFormat.QOperator else QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    return out


def faces_per_s(run: Run, batch: np.ndarray, seconds: float) -> float:
    run(batch)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run(batch)
        done += len(batch)
    return round(done / (time.perf_counter() - start), 1)


def ort_runner(path: Path, threads: int) -> Run:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {name: batch})[0])

    return run


def opencv_runner(path: Path) -> Run:
    net = cv2.dnn.readNet(str(path))

    def run(batch: np.ndarray) -> np.ndarray:
        net.setInput(batch)
        return np.asarray(net.forward())

    return run


def unit(vectors: np.ndarray) -> np.ndarray:
    flat = vectors.reshape(len(vectors), -1)
    normed: np.ndarray = flat / np.linalg.norm(flat, axis=1, keepdims=True)
    return normed


def pairs_gate(settings: Settings, models: dict[str, Path]) -> dict[str, object]:
    """``eval pairs`` on both development sets, fp32 against each int8 file (the default
    settings otherwise, flip averaging included)."""
    out: dict[str, object] = {}
    for name, path in models.items():
        copy = settings.model_copy(deep=True)
        if name != "fp32":
            copy.models.recognizer_onnx, copy.models.recognizer_family = path, "sface"
        pipeline = FacePipeline.from_settings(copy)
        for dataset in ("celeba_150", "att_orl"):
            root = FACES / dataset
            report, _ = evaluate_pairs(
                pipeline, root, read_pairs(root / "pairs.csv"), progress=False
            )
            out[f"{name}/{dataset}"] = {
                k: report[k]
                for k in ("accuracy_mean", "auc", "tar_at_far", "failed_pairs", "model_id")
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--pairs-gate", action="store_true", help="also run eval pairs")
    args = parser.parse_args()
    settings = load_settings()
    threads = settings.runtime.intra_op_threads or (os.cpu_count() or 1)
    fp32 = ModelStore(settings.models).load(SFACE_2021DEC).path
    crops = aligned_crops(settings, FACES / "celeba_train", CALIBRATION + HELD_BACK, seed=0)
    calibration = network_input(crops[:CALIBRATION])
    held_back = network_input(crops[CALIBRATION:])

    with tempfile.TemporaryDirectory() as scratch:
        models = {
            "fp32": fp32,
            **{
                f"int8_{fmt.name}": quantize(
                    fp32, calibration, fmt, Path(scratch) / f"sface-int8-{fmt.name}.onnx"
                )
                for fmt in (QuantFormat.QDQ, QuantFormat.QOperator)
            },
        }
        reference = unit(ort_runner(fp32, threads)(held_back))
        speed: dict[str, object] = {}
        for name, path in models.items():
            runners: dict[str, Run] = {"onnxruntime": ort_runner(path, threads)}
            try:
                runners["opencv"] = opencv_runner(path)
            except cv2.error as exc:
                speed[f"{name}/opencv"] = f"refused: {str(exc).strip().splitlines()[-1]}"
            for backend, run in runners.items():
                cosine = (unit(run(held_back)) * reference).sum(axis=1)
                speed[f"{name}/{backend}"] = {
                    f"batch_{n}_faces_per_s": faces_per_s(run, held_back[:n], args.seconds)
                    for n in (1, 32)
                } | {
                    "cosine_to_fp32_mean": round(float(cosine.mean()), 4),
                    "cosine_to_fp32_min": round(float(cosine.min()), 4),
                }
        results: dict[str, object] = {
            "versions": {"onnxruntime": ort.__version__, "opencv": cv2.__version__},
            "threads": threads,
            "crops": {"calibration": CALIBRATION, "measured": len(held_back)},
            "speed": speed,
        }
        if args.pairs_gate:
            results["pairs_gate"] = pairs_gate(settings, models)
    emit(results, args.json)


if __name__ == "__main__":
    main()
