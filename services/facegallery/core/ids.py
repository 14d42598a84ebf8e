"""Validation of gallery, user and template ids, before they go anywhere near a filter.

Milvus filters are expressions (``gallery == "g" and user_id == "u"``): an id with a quote,
an operator or a bracket could change their meaning. Ids are therefore held to a small, plain
alphabet and a length limit, and refused (never escaped) otherwise.
"""

from __future__ import annotations

import re

from facegallery.core.errors import InvalidInput

GALLERY_MAX = 64
USER_MAX = 128

# ASCII only: no look-alike unicode, no whitespace, no quotes, brackets or operators.
_GALLERY = re.compile(rf"[a-z0-9][a-z0-9_-]{{0,{GALLERY_MAX - 1}}}")
_USER = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.@:-]{{0,{USER_MAX - 1}}}")
_TEMPLATE = re.compile(r"[0-9a-f]{32}")
_JOB = _TEMPLATE  # job ids are uuid4 hex digests too
PATH_PATTERNS = {"gallery": _GALLERY, "user_id": _USER, "job_id": _JOB}
"""The id rules of the API's path parameters, for its OpenAPI document."""


def gallery_id(value: object) -> str:
    """A valid gallery id: 1-64 of a-z 0-9 _ - (starting with a letter or digit)."""
    return _check(value, _GALLERY, "gallery id", "1-64 characters of a-z, 0-9, _ and -")


def user_id(value: object) -> str:
    """A valid user id: 1-128 of A-Z a-z 0-9 _ . @ : - (starting with a letter or digit)."""
    return _check(value, _USER, "user id", "1-128 characters of A-Z, a-z, 0-9, _ . @ : and -")


def template_id(value: object) -> str:
    """A valid template id: 32 lowercase hex digits (as the gallery makes them)."""
    return _check(value, _TEMPLATE, "template id", "32 lowercase hexadecimal digits")


def job_id(value: object) -> str:
    """A valid job id: 32 lowercase hex digits (as the queue makes them)."""
    return _check(value, _JOB, "job id", "32 hexadecimal digits")


def _check(value: object, pattern: re.Pattern[str], what: str, rule: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string, got {type(value).__name__}")
    if pattern.fullmatch(value) is None:
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise InvalidInput(f"invalid {what} {shown!r}: use {rule}")
    return value
