"""The one mapping of errors to statuses, and back (what the clients do with an answer)."""

from __future__ import annotations

from facegallery.core.errors import (
    CallCancelled,
    DeadlineExceeded,
    FaceGalleryError,
    ImageTooLarge,
    InvalidImage,
    InvalidInput,
    NotFound,
    Overloaded,
    error_for,
)


def test_answers_turn_back_into_their_errors() -> None:
    assert type(error_for("INVALID_ARGUMENT", "m", "image_too_large")) is ImageTooLarge
    assert type(error_for("INVALID_ARGUMENT", "m", "invalid_image")) is InvalidImage
    assert type(error_for("INVALID_ARGUMENT", "m")) is InvalidInput  # most general first
    assert type(error_for("NOT_FOUND", "m")) is NotFound
    overloaded = error_for("RESOURCE_EXHAUSTED", "full", "overloaded", 5)
    assert isinstance(overloaded, Overloaded) and overloaded.retry_after_s == 5
    unknown = error_for("DATA_LOSS", "odd")
    assert type(unknown) is FaceGalleryError and unknown.message == "odd"
    assert type(error_for("DEADLINE_EXCEEDED", "late")) is DeadlineExceeded  # gRPC's own
    for cls in (InvalidInput, NotFound, Overloaded, DeadlineExceeded, CallCancelled):
        error = cls("x")
        assert type(error_for(error.grpc_code, "x", error.reason)) is cls
