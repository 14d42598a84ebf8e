"""The gallery: enrolled people as sets of templates in Milvus, the user registry beside them,
and the policy that keeps them."""

from facegallery.gallery.fusion import Candidate
from facegallery.gallery.impostor_samples import ImpostorSample
from facegallery.gallery.registry import UserRecord
from facegallery.gallery.store import (
    Gallery,
    GalleryStats,
    NewTemplate,
    Template,
    TemplateInfo,
    User,
)

__all__ = [
    "Candidate",
    "Gallery",
    "GalleryStats",
    "ImpostorSample",
    "NewTemplate",
    "Template",
    "TemplateInfo",
    "User",
    "UserRecord",
]
