"""Each gallery's impostor sample, the evidence of its open-set self-calibration, stored
beside it so every process reads the same. (Three words stay apart in this code: a
*pair calibration* fits the 1:1 threshold on labelled pairs, ``decisions.thresholds``; a
*self-calibration* finds a gallery's open-set threshold, ``decisions.openset``; this is
what the latter keeps.)

A self-calibration (``facegallery.decisions.openset``) searches a sample of the gallery's
templates with their own user left out; what it keeps is the highest of those searches'
decision values (the statistic identify compares with the threshold, named beside them; enough
to answer any target FPIR up to 0.1) and the gallery's size at the time. One row per gallery
in a small collection next to the templates and the user registry, written with the same
delete-then-insert as the others.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pymilvus import DataType, MilvusClient

from facegallery.core import ids
from facegallery.gallery.connection import PLACEHOLDER, PLACEHOLDER_ROW, MilvusConnection

# The tail of the largest sample (16,384 searches: 1,639 scores, 12 characters each) fits.
_TAIL_MAX_CHARS = 65535


@dataclass(frozen=True)
class ImpostorSample:
    """A gallery's leave-one-user-out evidence: ``searches`` templates searched when it held
    ``users`` users and ``templates`` templates; ``tail``: the highest of their decision values
    under ``statistic`` (``matching.statistic``), descending; ``calibrated_at`` in ms since
    the epoch."""

    gallery: str
    users: int
    templates: int
    searches: int
    tail: tuple[float, ...]
    calibrated_at: int
    statistic: str


class ImpostorSampleStore:
    """One row per gallery of one embedding model."""

    def __init__(self, connection: MilvusConnection, collection: str) -> None:
        self.connection = connection
        self.collection = collection

    def ensure(self) -> None:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("gallery", DataType.VARCHAR, is_primary=True, max_length=ids.GALLERY_MAX)
        schema.add_field("users", DataType.INT64)
        schema.add_field("templates", DataType.INT64)
        schema.add_field("searches", DataType.INT64)
        schema.add_field("calibrated_at", DataType.INT64)
        schema.add_field("tail", DataType.VARCHAR, max_length=_TAIL_MAX_CHARS)
        self.connection.ensure_collection(self.collection, schema)

    def get(self, gallery: str) -> ImpostorSample | None:
        rows = self.connection.lookup(self.collection, "gallery", [gallery], _FIELDS)
        return _sample(rows[0]) if rows else None

    def put(self, sample: ImpostorSample) -> None:
        row = {
            "gallery": ids.gallery_id(sample.gallery),
            "users": sample.users,
            "templates": sample.templates,
            "searches": sample.searches,
            "calibrated_at": sample.calibrated_at,
            "tail": json.dumps({"statistic": sample.statistic, "scores": list(sample.tail)}),
            PLACEHOLDER: PLACEHOLDER_ROW,
        }
        self.connection.replace(self.collection, "gallery", [row], {sample.gallery})
        self.connection.settle(self.collection)


_FIELDS = ["gallery", "users", "templates", "searches", "calibrated_at", "tail"]


def _sample(row: dict[str, Any]) -> ImpostorSample:
    tail = json.loads(row["tail"])
    if isinstance(tail, list):  # stored before the statistic was named: best scores
        tail = {"statistic": "score", "scores": tail}
    return ImpostorSample(
        row["gallery"],
        int(row["users"]),
        int(row["templates"]),
        int(row["searches"]),
        tuple(float(s) for s in tail["scores"]),
        int(row["calibrated_at"]),
        str(tail["statistic"]),
    )
