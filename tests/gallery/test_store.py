"""The Milvus gallery on a real Milvus Lite file: grouping, idempotency, deletes, isolation."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from facegallery.config import GallerySettings
from facegallery.errors import InvalidInput
from facegallery.gallery import Gallery, NewTemplate
from facegallery.gallery.store import collection_name

DIM = 16


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> Gallery:
    uri = tmp_path_factory.mktemp("milvus") / "g.db"
    return Gallery(GallerySettings(uri=str(uri)), "test-model-0123456789ab", DIM)


def _unit(seed: int, near: np.ndarray | None = None, noise: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=DIM) if near is None else near + noise * rng.normal(size=DIM)
    return (v / np.linalg.norm(v)).astype(np.float32)


def _tid(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


def _templates(user: str, base: np.ndarray, n: int) -> list[NewTemplate]:
    return [
        NewTemplate(_tid(user, i), _unit(100 + i, base), 0.9, f"{user}-{i}.jpg") for i in range(n)
    ]


def test_search_groups_by_user(gallery: Gallery) -> None:
    people = {f"user{u}": _unit(u) for u in range(8)}
    for user, base in people.items():
        gallery.add("grouping", user, _templates(user, base, 6 if user == "user0" else 2))
    probe = _unit(999, people["user0"], 0.1)
    hits = gallery.search("grouping", probe[None], top_k=5)[0]
    users = [h.user_id for h in hits]
    assert users[0] == "user0"
    assert len(users) == len(set(users)) == 5  # user0's six templates count once
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    best = max(float(t.embedding @ probe) for t in gallery.templates("grouping", "user0"))
    assert hits[0].score == pytest.approx(best, abs=1e-5)  # a user scores by their best template


def test_many_probes_in_one_call(gallery: Gallery) -> None:
    people = {f"p{u}": _unit(50 + u) for u in range(4)}
    for user, base in people.items():
        gallery.add("batch", user, _templates(user, base, 2))
    probes = np.stack([_unit(7 + i, people[f"p{i}"], 0.1) for i in range(4)])
    assert [h[0].user_id for h in gallery.search("batch", probes, 3)] == ["p0", "p1", "p2", "p3"]


def test_adds_are_idempotent(gallery: Gallery) -> None:
    templates = _templates("carol", _unit(5), 3)
    gallery.add("idem", "carol", templates)
    gallery.add("idem", "carol", templates)  # a retried request
    assert gallery.stats("idem").templates == 3
    assert {t.template_id for t in gallery.templates("idem", "carol")} == {
        t.template_id for t in templates
    }


def test_delete_user_then_search_no_longer_finds_them(gallery: Gallery) -> None:
    base = _unit(77)
    gallery.add("deletes", "dave", _templates("dave", base, 3))
    gallery.add("deletes", "erin", _templates("erin", _unit(78), 1))
    assert gallery.search("deletes", base[None], 1)[0][0].user_id == "dave"
    assert gallery.delete_user("deletes", "dave") == 3
    assert gallery.templates("deletes", "dave") == []
    assert [h.user_id for h in gallery.search("deletes", base[None], 5)[0]] == ["erin"]
    assert gallery.delete_user("deletes", "dave") == 0


def test_galleries_are_isolated(gallery: Gallery) -> None:
    base = _unit(31)
    gallery.add("tenant-a", "frank", _templates("frank", base, 1))
    gallery.add("tenant-b", "grace", _templates("grace", _unit(32), 1))
    assert [h.user_id for h in gallery.search("tenant-b", base[None], 5)[0]] == ["grace"]
    assert gallery.users("tenant-a") == ["frank"]
    assert gallery.search("tenant-c", base[None], 5) == [[]]


def test_users_are_paged_and_stats_count(gallery: Gallery) -> None:
    for u in range(7):
        gallery.add("paging", f"u{u}", _templates(f"u{u}", _unit(200 + u), 2))
    first = gallery.users("paging", limit=3)
    second = gallery.users("paging", after=first[-1], limit=3)
    third = gallery.users("paging", after=second[-1], limit=3)
    assert first + second + third == [f"u{u}" for u in range(7)]
    stats = gallery.stats("paging")
    assert (stats.users, stats.templates) == (7, 14)


def test_delete_templates(gallery: Gallery) -> None:
    templates = _templates("hank", _unit(9), 3)
    gallery.add("evict", "hank", templates)
    gallery.delete_templates("evict", [templates[0].template_id])
    assert len(gallery.templates("evict", "hank")) == 2


@pytest.mark.parametrize(
    ("gallery_id", "user_id"),
    [('g" or gallery != "x', "u"), ("g", 'u" || user_id != "'), ("g", 'u in ["a"]'), ("g", "ü")],
)
def test_hostile_ids_never_reach_milvus(gallery: Gallery, gallery_id: str, user_id: str) -> None:
    gallery.add("victim", "victim", _templates("victim", _unit(1), 1))
    with pytest.raises(InvalidInput):
        gallery.delete_user(gallery_id, user_id)
    with pytest.raises(InvalidInput):
        gallery.templates(gallery_id, user_id)
    with pytest.raises(InvalidInput):
        gallery.add(gallery_id, user_id, _templates("x", _unit(2), 1))
    assert gallery.stats("victim").templates == 1


def test_wrong_dimension_is_refused(gallery: Gallery) -> None:
    with pytest.raises(InvalidInput, match="shape"):
        gallery.add(
            "dims", "ivy", [NewTemplate(_tid("ivy"), np.ones(DIM + 1, np.float32), 1.0, "x")]
        )


def test_one_collection_per_model(tmp_path: Path) -> None:
    settings = GallerySettings(uri=str(tmp_path / "m.db"))
    a = Gallery(settings, "sface-2021dec-aaaa+flip", DIM)
    b = Gallery(settings, "sface-2021dec-bbbb", DIM)
    a.add("g", "jane", _templates("jane", _unit(3), 1))
    assert b.stats("g").templates == 0 and a.stats("g").templates == 1
    assert collection_name("sface-2021dec-aaaa+flip") == "faces_sface_2021dec_aaaa_flip"
