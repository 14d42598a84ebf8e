"""The inputs and results of an enrollment, light enough for the job queue and the workers to
import without loading the pipeline (no model, no runtime)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from facegallery.vision.quality import Quality

Fence = Callable[[], None]
"""Called before each gallery write of an enrollment; raises to stop it."""


@dataclass(frozen=True)
class ImageInput:
    """An image to process and the name it is reported (and stored as source) under."""

    name: str
    data: bytes | np.ndarray


@dataclass(frozen=True)
class EnrollOutcome:
    """What happened to one enrollment image. ``reason`` (when rejected) is one of
    invalid_image, no_face, multiple_faces, no_such_face, low_quality, duplicate_identity,
    redundant."""

    image: str
    enrolled: bool
    reason: str | None = None
    message: str = ""
    template_id: str | None = None
    quality: Quality | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "image": self.image,
            "status": "enrolled" if self.enrolled else "rejected",
            "reason": self.reason,
            "message": self.message,
            "template_id": self.template_id,
            "quality": self.quality.to_dict() if self.quality else None,
            "warnings": self.warnings,
        }


@dataclass(frozen=True)
class EnrollResult:
    gallery: str
    user_id: str
    outcomes: list[EnrollOutcome]
    templates: int
    evicted: list[str]

    @property
    def enrolled(self) -> int:
        return sum(o.enrolled for o in self.outcomes)

    def to_dict(self) -> dict[str, object]:
        return {
            "gallery": self.gallery,
            "user_id": self.user_id,
            "enrolled": self.enrolled,
            "rejected": len(self.outcomes) - self.enrolled,
            "templates": self.templates,
            "evicted_templates": self.evicted,
            "images": [o.to_dict() for o in self.outcomes],
        }
