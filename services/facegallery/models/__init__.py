"""Model store: which models exist, where their files come from, and how they are prepared."""

from facegallery.models.specs import PACKS, ModelPack, ModelSpec
from facegallery.models.store import ModelStore, PreparedModel

__all__ = ["PACKS", "ModelPack", "ModelSpec", "ModelStore", "PreparedModel"]
