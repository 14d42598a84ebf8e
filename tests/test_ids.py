"""Hostile ids are refused before they reach a Milvus filter expression."""

from __future__ import annotations

import pytest

from facegallery.core import ids
from facegallery.core.errors import InvalidInput

HOSTILE = [
    "",
    'alice"',
    'alice" or user_id != "',
    "alice' or 1==1",
    "a || b",
    'x" || gallery != "y',
    'u in ["a", "b"]',
    "a and b",
    "bob\n",
    " bob",
    "bob smith",
    "a" * 129,
    "\uff41\uff4c\uff49\uff43\uff45",  # fullwidth "alice"
    "\u0430lice",  # Cyrillic a
    "ali\u200bce",  # zero-width space
    "alice\u202e",  # right-to-left override
    "../etc/passwd",
    "(alice)",
    "%",
    "-leading-dash",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_user_ids_are_refused(value: str) -> None:
    with pytest.raises(InvalidInput, match="invalid user id"):
        ids.user_id(value)


@pytest.mark.parametrize("value", [*HOSTILE, "Upper", "a" * 65, "dot.ted", "at@sign"])
def test_hostile_gallery_ids_are_refused(value: str) -> None:
    with pytest.raises(InvalidInput, match="invalid gallery id"):
        ids.gallery_id(value)


@pytest.mark.parametrize("value", ["alice", "Alice_01", "emp-42", "a.b@corp:7", "x" * 128, "0"])
def test_ordinary_user_ids_pass(value: str) -> None:
    assert ids.user_id(value) == value


def test_gallery_and_template_ids() -> None:
    assert ids.gallery_id("site-a_2") == "site-a_2"
    assert ids.template_id("0" * 32) == "0" * 32
    with pytest.raises(InvalidInput):
        ids.template_id("0" * 31 + "g")
    with pytest.raises(InvalidInput, match="must be a string"):
        ids.user_id(42)
