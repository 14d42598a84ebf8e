"""The aligned face crop behind each template, kept for operators who chose to
(``gallery.keep_crops``), so that a gallery can move to a new embedding model without the
original photos (``facegallery reembed``).

A crop is the face's sheet (``vision.sheet``: the aligned 112x112 crop the recognizers see and
dlib's chip, which the accurate pack's second network sees; collections kept before sheets
hold the aligned crop alone), stored losslessly (PNG, base64 text, since
Milvus 2.3 has no bytes field; split over as many text fields as it needs, a field holding at
most 65,535 characters), so a re-embedding gives exactly what enrolling the photo with the
new model would have. One row per template in a collection beside the templates,
keyed by the same template id and partitioned by gallery; it is written before the
template, and deleted with it (a user's deletion, the cap's evictions), so no face image
outlives its template. A crop is a picture of a person's face: keeping them is a privacy
decision as much as a storage one, which is why the setting is off by default.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

import cv2
import numpy as np
from pymilvus import DataType, MilvusClient

from facegallery.core import ids
from facegallery.core.errors import Unavailable
from facegallery.gallery.connection import (
    PLACEHOLDER,
    PLACEHOLDER_ROW,
    MilvusConnection,
    gallery_filter,
    template_filter,
    user_filter,
)
from facegallery.vision.sheet import ALIGNED_SHAPE, SHEET_SHAPE, aligned_part

_FIELD_CHARS = 65535  # Milvus's VARCHAR limit
# A sheet (150x262x3) as PNG is at most ~118 KB (incompressible noise), ~158K characters as
# base64: three fields hold any crop whatever the face. Collections made before sheets have
# one field, which holds any 112x112 crop (at most ~51K characters): they go on keeping the
# aligned part of a sheet (Milvus 2.3 cannot add fields to a collection).
CHUNK_FIELDS = ("crop", "crop_1", "crop_2")

log = logging.getLogger(__name__)


def encode_crop(crop: np.ndarray) -> str:
    """Lossless text form of an embedder's (H, W, 3) uint8 input, at most a sheet's size."""
    if crop.ndim != 3 or crop.shape[2] != 3 or crop.dtype != np.uint8:
        raise ValueError(f"a crop is an (H, W, 3) uint8 image, not {crop.shape} {crop.dtype}")
    if crop.shape[0] > SHEET_SHAPE[0] or crop.shape[1] > SHEET_SHAPE[1]:
        raise ValueError(f"a crop is at most a sheet's size {SHEET_SHAPE}, not {crop.shape}")
    ok, png = cv2.imencode(".png", crop)
    if not ok:
        raise ValueError("the crop could not be encoded as PNG")
    return base64.b64encode(png.tobytes()).decode("ascii")


def decode_crop(text: str) -> np.ndarray:
    """The crop ``encode_crop`` stored, pixel for pixel."""
    data = np.frombuffer(base64.b64decode(text), np.uint8)
    crop = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if crop is None or crop.shape not in (SHEET_SHAPE, ALIGNED_SHAPE):
        raise Unavailable("a stored crop is damaged (not a sheet's or an aligned crop's PNG)")
    return crop


class CropStore:
    """The crops of every gallery of one embedding model's collection."""

    def __init__(self, connection: MilvusConnection, collection: str) -> None:
        self.connection = connection
        self.collection = collection
        self.present = False
        self.fields: tuple[str, ...] = CHUNK_FIELDS[:1]

    def open(self, create: bool) -> None:
        """Create the collection when ``create`` (keeping crops), else only load it if an
        earlier configuration made one (so deletions still reach its crops)."""
        if create:
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("template_id", DataType.VARCHAR, is_primary=True, max_length=32)
            schema.add_field(
                "gallery", DataType.VARCHAR, max_length=ids.GALLERY_MAX, is_partition_key=True
            )
            schema.add_field("user_id", DataType.VARCHAR, max_length=ids.USER_MAX)
            for field in CHUNK_FIELDS:
                schema.add_field(field, DataType.VARCHAR, max_length=_FIELD_CHARS)
            self.connection.ensure_collection(self.collection, schema)
            self.present = True
        else:
            self.present = self.connection.exists(self.collection)
        if self.present:  # an older collection may have fewer text fields
            described = self.connection.call("describe_collection", self.collection)
            names = {field["name"] for field in described["fields"]}
            self.fields = tuple(f for f in CHUNK_FIELDS if f in names)
            if len(self.fields) == 1:
                log.warning(
                    "%s was made before crops were kept as sheets: it keeps aligned crops "
                    "alone, so its templates cannot move to the accurate pack",
                    self.collection,
                )

    def put(
        self, gallery: str, crops: dict[str, tuple[str, np.ndarray]], settle: bool = True
    ) -> None:
        """Store ``{template_id: (user_id, crop)}`` (a retried write rewrites the rows)."""
        if not crops:
            return
        rows = [
            {
                "template_id": template_id,
                "gallery": gallery,
                "user_id": user_id,
                **self._chunks(encode_crop(self._storable(crop))),
                PLACEHOLDER: PLACEHOLDER_ROW,
            }
            for template_id, (user_id, crop) in crops.items()
        ]
        stored = {r["template_id"] for r in self._rows(gallery, list(crops), ["template_id"])}
        self.connection.replace(self.collection, "template_id", rows, stored)
        if settle:
            self.connection.settle(self.collection)

    def get(self, gallery: str, template_ids: list[str]) -> dict[str, np.ndarray]:
        """The stored crops of these templates (those with none are absent)."""
        if not self.present:
            return {}
        rows = self._rows(gallery, template_ids, ["template_id", *self.fields])
        return {r["template_id"]: decode_crop("".join(r[f] for f in self.fields)) for r in rows}

    def count(self, gallery: str) -> int:
        if not self.present:
            return 0
        return self.connection.count(self.collection, gallery_filter(gallery), strong=True)

    def delete_user(self, gallery: str, user_id: str) -> None:
        if self.present:
            self.connection.delete(self.collection, user_filter(gallery, user_id))
            self.connection.settle(self.collection)

    def delete(self, template_ids: list[str]) -> None:
        if self.present and template_ids:
            self.connection.delete(self.collection, template_filter(template_ids))
            self.connection.settle(self.collection)

    def _storable(self, crop: np.ndarray) -> np.ndarray:
        """The crop, or in a one-field collection (made before sheets) a sheet's aligned
        part: what such a collection has always held."""
        if len(self.fields) == 1 and crop.shape == SHEET_SHAPE:
            part: np.ndarray = aligned_part(crop[None])[0]
            return part
        return crop

    def _chunks(self, text: str) -> dict[str, str]:
        """The text over the collection's fields, each at most Milvus's limit."""
        parts = [text[i : i + _FIELD_CHARS] for i in range(0, len(text), _FIELD_CHARS)]
        if len(parts) > len(self.fields):
            raise ValueError(
                f"a crop of {len(text)} characters does not fit {self.collection}'s "
                f"{len(self.fields)} text field(s)"
            )
        return {field: parts[i] if i < len(parts) else "" for i, field in enumerate(self.fields)}

    def _rows(
        self, gallery: str, template_ids: list[str], fields: list[str]
    ) -> list[dict[str, Any]]:
        valid = [ids.template_id(t) for t in template_ids]
        return self.connection.lookup(
            self.collection, "template_id", valid, fields, gallery_filter(gallery)
        )
