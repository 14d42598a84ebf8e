"""What makes two enrollments the same request, for the server (a reused idempotency key with
another payload is refused) and for clients (a key derived from the content, so running the
same import twice returns the jobs of the first run instead of enrolling again)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def payload_hash(
    gallery: str, user_id: str, images: Sequence[tuple[str, bytes]], face_index: int | None
) -> str:
    """The gallery, the user, the face index, and each image's name and content."""
    digest = hashlib.sha256(f"{gallery}\0{user_id}\0{face_index}".encode())
    for name, data in images:
        digest.update(b"\0" + name.encode() + b"\0")
        digest.update(hashlib.sha256(data).digest())
    return digest.hexdigest()


def content_key(
    gallery: str, user_id: str, images: Sequence[tuple[str, bytes]], face_index: int | None
) -> str:
    """An idempotency key from the content: the same photos for the same user, the same key."""
    return "content-" + payload_hash(gallery, user_id, images, face_index)[:40]
