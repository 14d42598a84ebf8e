"""``facegallery export``: a run's checkpoint as an ONNX recognizer the pipeline serves.

The file has a dynamic batch axis and records in its metadata what a reader needs to run it
right (input layout, colour order, normalisation, the ``arcface`` family it plugs in as) and
where it came from (loss, epochs, seed, the detector whose crops it learned). ONNX Runtime's
output is checked against torch's on real aligned crops of held-out people before the file
is kept: an export that changes the embedding (cosine < ``PARITY_COSINE``) is refused.

Beside ``OUT.onnx`` goes ``OUT.training.json``, the identities and photo hashes it was trained
on: ``eval pairs`` / ``eval identify`` read it and refuse to measure the model on them.
Serve it with ``models.recognizer_onnx: OUT.onnx`` and ``models.recognizer_family: arcface``:
it gets its own model id, so its own gallery collections and calibrations.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from facegallery.core.config import Settings
from facegallery.core.errors import FailedPrecondition, InvalidInput
from facegallery.training.data import manifest_path
from facegallery.training.model import MEAN, STD, preprocess
from facegallery.training.trainer import (
    CHECKPOINT,
    MANIFEST,
    RunConfig,
    build_model,
    face_finder,
    held_out_people,
)
from facegallery.training.validation import PARITY_COSINE, embed_crops, lowest_cosine

PARITY_CROPS = 64
OPSET = 17


def export(run_dir: Path, out: Path, settings: Settings) -> dict[str, Any]:
    """Write ``out`` (and its manifest) from ``run_dir``'s last checkpoint; returns the
    parity report."""
    config = RunConfig.read(run_dir)
    checkpoint = run_dir / CHECKPOINT
    if not checkpoint.is_file():
        raise InvalidInput(f"{run_dir} has no {CHECKPOINT} yet: train at least one epoch")
    state = torch.load(checkpoint, weights_only=False)
    model = build_model(config, settings)
    model.load_state_dict(state["model"])
    model.eval()
    crops = _parity_crops(config, settings)
    graph = _to_onnx(model)
    _describe(graph, config, state["epoch"])
    raw = graph.SerializeToString()
    cosine = _parity(model, raw, crops)
    if cosine < PARITY_COSINE:
        raise FailedPrecondition(
            f"the exported graph disagrees with torch (lowest cosine {cosine:.6f} < "
            f"{PARITY_COSINE}); not written"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".part")
    partial.write_bytes(raw)
    partial.replace(out)
    shutil.copyfile(run_dir / MANIFEST, manifest_path(out))
    return {
        "onnx": str(out),
        "manifest": str(manifest_path(out)),
        "epoch": state["epoch"],
        "loss": config.loss,
        "parity_min_cosine": round(cosine, 7),
        "parity_crops": len(crops),
        "family": "arcface",
    }


def _parity_crops(config: RunConfig, settings: Settings) -> np.ndarray:
    """Held-out people's aligned crops (the run's own validation split, from the cache)."""
    finder = face_finder(settings)
    if finder.detector_id != config.detector_id:
        raise FailedPrecondition(
            f"the run's crops came from {config.detector_id}, the configured detector is "
            f"{finder.detector_id}: configure the run's detector to export it"
        )
    return held_out_people(config, finder, settings.training.cache_dir).crops[:PARITY_CROPS]


def _to_onnx(model: torch.nn.Module) -> onnx.ModelProto:
    """The TorchScript exporter (``dynamo=False``): the newer one needs onnxscript, which
    the project does not install, and this plain convolutional graph needs nothing it adds."""
    buffer = io.BytesIO()
    torch.onnx.export(
        model,
        (preprocess(np.zeros((2, 112, 112, 3), np.uint8)),),
        buffer,  # type: ignore[arg-type]
        input_names=["input"],
        output_names=["embedding"],
        dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}},
        opset_version=OPSET,
        dynamo=False,
    )
    return onnx.load_from_string(buffer.getvalue())


def _describe(graph: onnx.ModelProto, config: RunConfig, epoch: int) -> None:
    """The preprocessing and the provenance, as the model's own metadata."""
    graph.producer_name = "facegallery train"
    backbone = "SFace fine-tuned" if config.init == "sface" else "an IResNet trained"
    graph.doc_string = (
        f"Face embedding ({config.embedding_dim}-d, not normalised) from {backbone} "
        f"with the {config.loss} loss."
    )
    properties = {
        "family": "arcface",
        "input": "NCHW float32, 112x112, RGB, 5-point aligned crop",
        "normalisation": f"(pixel - {MEAN}) / {STD}",
        "output": f"{config.embedding_dim}-d embedding; L2-normalise, compare by cosine",
        "loss": config.loss,
        "init": config.init,
        "epochs": str(epoch),
        "seed": str(config.seed),
        "detector_id": config.detector_id,
        "training_manifest": "<model>.training.json",
    }
    for key, value in properties.items():
        graph.metadata_props.add(key=key, value=value)


def _parity(model: torch.nn.Module, raw: bytes, crops: np.ndarray) -> float:
    """Lowest cosine between torch's and ONNX Runtime's flip-averaged embeddings."""
    session = ort.InferenceSession(raw, providers=["CPUExecutionProvider"])
    batch = preprocess(crops).numpy()
    outputs = [session.run(None, {"input": x})[0] for x in (batch, batch[:, :, :, ::-1].copy())]
    return lowest_cosine(outputs[0] + outputs[1], embed_crops(model, crops))
