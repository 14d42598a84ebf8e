"""The gallery on both backends: a real Milvus Lite file and the managed Milvus server.

Every gallery test here runs twice (``lite``, ``server``): grouping by user, idempotent adds, the
registry (pages, stats, users), deletes, isolation, hostile ids, and reads from a second
client seeing writes at once.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facegallery.core.config import GallerySettings
from facegallery.core.errors import InvalidInput, NotFound
from facegallery.gallery import Gallery, ImpostorSample, NewTemplate
from facegallery.gallery.connection import PLACEHOLDER, PLACEHOLDER_ROW
from facegallery.gallery.store import collection_name
from facegallery.servers import MilvusServer

DIM = 16
MODEL = "test-model-0123456789ab"


@pytest.fixture(scope="module", params=["lite", "server"])
def gallery_settings(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> GallerySettings:
    if request.param == "lite":
        return GallerySettings(uri=str(tmp_path_factory.mktemp("milvus") / "g.db"))
    server: MilvusServer = request.getfixturevalue("milvus_server")
    return GallerySettings(uri=server.uri)


@pytest.fixture(scope="module")
def gallery(gallery_settings: GallerySettings) -> Gallery:
    return Gallery(gallery_settings, MODEL, DIM)


def _unit(seed: int, near: np.ndarray | None = None, noise: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=DIM) if near is None else near + noise * rng.normal(size=DIM)
    return (v / np.linalg.norm(v)).astype(np.float32)


def _tid(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


def _templates(
    user: str, base: np.ndarray, n: int, noise: float = 0.3, tag: str = ""
) -> list[NewTemplate]:
    return [
        NewTemplate(_tid(user, tag, i), _unit(100 + i, base, noise), 0.9, f"{user}-{i}.jpg")
        for i in range(n)
    ]


def _fused(stored: np.ndarray, probe: np.ndarray, fusion: str) -> float:
    """The exact fused score of one user's templates (n, D), in numpy."""
    scores = np.sort(stored @ probe)[::-1]
    return float(scores[0] if fusion == "max" or len(scores) == 1 else scores[:2].mean())


def _with_fusion(gallery: Gallery, fusion: str) -> Gallery:
    """The same collections, searched with another fusion."""
    return Gallery(gallery.settings.model_copy(update={"fusion": fusion}), MODEL, DIM)


def test_search_groups_by_user(gallery: Gallery) -> None:
    people = {f"user{u}": _unit(u) for u in range(8)}
    for user, base in people.items():
        gallery.add("grouping", user, _templates(user, base, 6 if user == "user0" else 2))
    probe = _unit(999, people["user0"], 0.1)
    stored = np.stack([t.embedding for t in gallery.templates("grouping", "user0")])
    for fusion in ("max", "top2_mean"):
        hits = _with_fusion(gallery, fusion).search("grouping", probe[None], top_k=5)[0]
        users = [h.user_id for h in hits]
        assert users[0] == "user0"
        assert len(users) == len(set(users)) == 5  # user0's six templates count once
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert hits[0].score == pytest.approx(_fused(stored, probe, fusion), abs=1e-5)


def test_two_good_templates_outrank_one_lucky_one(gallery: Gallery) -> None:
    """A stranger close to one photo of a user (and far from their other) scores above a user
    whose two photos are both fairly close under max, below them under top2_mean."""
    probe = _unit(1234)
    lucky = [_unit(1, probe, 0.15), _unit(2)]
    steady = [_unit(3, probe, 0.3), _unit(4, probe, 0.3)]
    for user, vectors in (("lucky", lucky), ("steady", steady)):
        gallery.add(
            "fusion",
            user,
            [NewTemplate(_tid(user, i), v, 0.9, f"{i}.jpg") for i, v in enumerate(vectors)],
        )
    assert [
        c.user_id for c in _with_fusion(gallery, "max").search("fusion", probe[None], 2)[0]
    ] == [
        "lucky",
        "steady",
    ]
    fused = _with_fusion(gallery, "top2_mean").search("fusion", probe[None], 2)[0]
    assert [c.user_id for c in fused] == ["steady", "lucky"]
    assert fused[1].score == pytest.approx(_fused(np.stack(lucky), probe, "top2_mean"), abs=1e-5)


def test_top_two_mean_reads_the_templates_below_the_cut(
    gallery: Gallery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a shortlist of 3 the search retrieves ``3 x cap`` templates: most shortlisted
    users have one of them there, and their second best is read and scored, so every
    candidate's score is the exact top-two mean, and a mate's search finds them first."""
    fused = Gallery(
        gallery.settings.model_copy(update={"fusion": "top2_mean", "cohort_size": 3}),
        MODEL,
        DIM,
    )
    people = {f"c{u}": _unit(2000 + u) for u in range(40)}
    stored = {}
    for user, base in people.items():
        templates = _templates(user, base, 3, noise=0.3, tag="cut")
        gallery.add("cut", user, templates)
        stored[user] = np.stack([t.embedding for t in templates])
    read: list[int] = []
    embeddings = fused._embeddings

    def counted(g: str, users: set[str]) -> dict[str, np.ndarray]:
        read.append(len(users))
        return embeddings(g, users)

    monkeypatch.setattr(fused, "_embeddings", counted)
    strangers = np.stack([_unit(3000 + i) for i in range(20)])
    mates = np.stack([_unit(4000 + i, people[f"c{i}"], 0.2) for i in range(10)])
    for probe, hits in zip(strangers, fused.search("cut", strangers, 3), strict=True):
        assert len(hits) == 3
        for h in hits:
            assert h.score == pytest.approx(_fused(stored[h.user_id], probe, "top2_mean"), abs=1e-4)
    assert read and read[0] >= 5, "shortlisted users with one retrieved template were read"
    for i, (probe, hits) in enumerate(zip(mates, fused.search("cut", mates, 1), strict=True)):
        exact = max(stored, key=lambda u: _fused(stored[u], probe, "top2_mean"))
        assert hits[0].user_id == exact == f"c{i}"


@pytest.mark.parametrize("fusion", ["max", "top2_mean"])
def test_near_identical_templates_count_once_and_match_exact_search(
    gallery: Gallery, fusion: str
) -> None:
    """Users holding the full cap of near-copies: each appears once, and the ranking is the
    exact one (numpy over the same templates, fused the same way)."""
    searcher = _with_fusion(gallery, fusion)
    cap = gallery.settings.max_templates_per_user
    people = {f"twin{u}": _unit(400 + u) for u in range(12)}
    stored = {}
    for user, base in people.items():
        templates = _templates(user, base, cap, noise=0.01)
        gallery.add("twins", user, templates)
        stored[user] = np.stack([t.embedding for t in templates])
    probes = np.stack([_unit(500 + i, people[f"twin{i}"], 0.8) for i in range(6)])
    for probe, hits in zip(probes, searcher.search("twins", probes, top_k=5), strict=True):
        users = [h.user_id for h in hits]
        assert len(users) == len(set(users)) == 5
        exact = sorted(stored, key=lambda u: -_fused(stored[u], probe, fusion))[:5]
        assert users == exact
        for h in hits:
            assert h.score == pytest.approx(_fused(stored[h.user_id], probe, fusion), abs=1e-4)


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
    assert gallery.get_user("idem", "carol").templates[0].template_id in {
        t.template_id for t in templates
    }
    assert {t.template_id for t in gallery.templates("idem", "carol")} == {
        t.template_id for t in templates
    }
    assert len(gallery.search("idem", templates[0].embedding[None], 5)[0]) == 1


def test_a_registry_write_lost_after_its_templates_is_mended_by_the_retry(
    gallery: Gallery,
) -> None:
    """The templates landed, the registry row did not (an error, a killed worker): the
    state is made for real by deleting the row, then the job's retry and a later add run."""
    templates = _templates("dora", _unit(6), 2)
    gallery.add("lost", "dora", templates)
    registry = gallery.registry
    gallery.connection.delete(registry.collection, 'user_key in ["lost/dora"]')
    gallery.connection.settle(registry.collection)
    assert gallery.users("lost") == []  # the half-written state
    gallery.add("lost", "dora", templates)  # the retry: nothing new to store
    assert gallery.users("lost") == ["dora"]
    assert len(gallery.get_user("lost", "dora").templates) == 2
    assert gallery.stats("lost").users == 1
    gallery.connection.delete(registry.collection, 'user_key in ["lost/dora"]')
    gallery.connection.settle(registry.collection)
    gallery.add("lost", "dora", _templates("dora", _unit(6), 1, tag="new"))  # a later job
    record = registry.get("lost", "dora")
    assert record is not None and record.templates == 3


def test_delete_user_then_search_no_longer_finds_them(gallery: Gallery) -> None:
    base = _unit(77)
    gallery.add("deletes", "dave", _templates("dave", base, 3))
    gallery.add("deletes", "erin", _templates("erin", _unit(78), 1))
    assert gallery.search("deletes", base[None], 1)[0][0].user_id == "dave"
    assert gallery.delete_user("deletes", "dave") == 3
    assert gallery.templates("deletes", "dave") == []
    assert [h.user_id for h in gallery.search("deletes", base[None], 5)[0]] == ["erin"]
    assert gallery.users("deletes") == ["erin"]
    with pytest.raises(NotFound):
        gallery.get_user("deletes", "dave")
    assert gallery.delete_user("deletes", "dave") == 0


def test_another_client_sees_writes_at_once(gallery: Gallery) -> None:
    """Read-your-writes across processes: a second client (another worker or gateway
    replica) searching right after a write returns sees it, and sees a delete."""
    other = Gallery(gallery.settings, MODEL, DIM) if not gallery.embedded else gallery
    for i in range(5):
        base = _unit(600 + i)
        gallery.add("ryw", f"new{i}", _templates(f"new{i}", base, 1))
        assert other.search("ryw", base[None], 1)[0][0].user_id == f"new{i}"
        assert other.get_user("ryw", f"new{i}").templates
        gallery.delete_user("ryw", f"new{i}")
        assert all(h.user_id != f"new{i}" for h in other.search("ryw", base[None], 5)[0])


def test_galleries_are_isolated(gallery: Gallery) -> None:
    base = _unit(31)
    gallery.add("tenant-a", "frank", _templates("frank", base, 1))
    gallery.add("tenant-b", "grace", _templates("grace", _unit(32), 1))
    assert [h.user_id for h in gallery.search("tenant-b", base[None], 5)[0]] == ["grace"]
    assert gallery.users("tenant-a") == ["frank"]
    assert gallery.search("tenant-c", base[None], 5) == [[]]
    assert gallery.stats("tenant-c").users == 0


def test_users_are_paged_in_order_across_segments(gallery: Gallery) -> None:
    """Pages come from the registry in id order, also when the rows were written in
    several batches (several segments) and out of order."""
    order = [5, 0, 6, 2, 3, 1, 4]
    for u in order:
        gallery.add("paging", f"u{u}", _templates(f"u{u}", _unit(200 + u), 2))
        gallery.settle()
    first = gallery.users("paging", limit=3)
    second = gallery.users("paging", after=first[-1], limit=3)
    third = gallery.users("paging", after=second[-1], limit=3)
    assert first + second + third == [f"u{u}" for u in range(7)]
    stats = gallery.stats("paging")
    assert (stats.users, stats.templates) == (7, 14)
    records = gallery.user_records("paging", limit=7)
    assert [r.templates for r in records] == [2] * 7
    assert all(r.created_at <= r.updated_at for r in records)


def test_registry_follows_evictions_and_many_users_at_once(gallery: Gallery) -> None:
    batch = {f"bulk{u}": _templates(f"bulk{u}", _unit(300 + u), 3) for u in range(20)}
    gallery.add_many("bulk", batch)
    assert gallery.stats("bulk").users == 20
    templates = batch["bulk0"]
    gallery.delete_templates("bulk", "bulk0", [templates[0].template_id])
    assert gallery.user_records("bulk", limit=1)[0].templates == 2
    assert {t.template_id for t in gallery.get_user("bulk", "bulk0").templates} == {
        t.template_id for t in templates[1:]
    }
    gallery.delete_templates("bulk", "bulk0", [t.template_id for t in templates[1:]])
    assert "bulk0" not in gallery.users("bulk", limit=100)
    assert gallery.stats("bulk").users == 19


def test_get_user_has_no_embeddings(gallery: Gallery) -> None:
    gallery.add("info", "ivan", _templates("ivan", _unit(8), 2))
    user = gallery.get_user("info", "ivan")
    assert user.user_id == "ivan" and len(user.templates) == 2
    assert {t.source for t in user.templates} == {"ivan-0.jpg", "ivan-1.jpg"}
    assert all(not hasattr(t, "embedding") for t in user.templates)  # ids, never vectors


def test_delete_templates(gallery: Gallery) -> None:
    templates = _templates("hank", _unit(9), 3)
    gallery.add("evict", "hank", templates)
    gallery.delete_templates("evict", "hank", [templates[0].template_id])
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
        gallery.get_user(gallery_id, user_id)
    with pytest.raises(InvalidInput):
        gallery.users(gallery_id, after=user_id)
    with pytest.raises(InvalidInput):
        gallery.add(gallery_id, user_id, _templates("x", _unit(2), 1))
    assert gallery.stats("victim").templates == 1


def test_wrong_dimension_and_bad_page_are_refused(gallery: Gallery) -> None:
    with pytest.raises(InvalidInput, match="shape"):
        gallery.add(
            "dims", "ivy", [NewTemplate(_tid("ivy"), np.ones(DIM + 1, np.float32), 1.0, "x")]
        )
    with pytest.raises(InvalidInput, match="limit"):
        gallery.users("dims", limit=0)


def test_one_collection_per_model(gallery_settings: GallerySettings) -> None:
    a = Gallery(gallery_settings, "sface-2021dec-aaaa+flip", DIM)
    b = Gallery(gallery_settings, "sface-2021dec-bbbb", DIM)
    a.add("g", "jane", _templates("jane", _unit(3), 1))
    assert b.stats("g").templates == 0 and a.stats("g").templates == 1
    assert collection_name("sface-2021dec-aaaa+flip") == "faces_sface_2021dec_aaaa_flip"
    a.drop()
    b.drop()


def test_registry_is_rebuilt_for_an_older_gallery(gallery_settings: GallerySettings) -> None:
    """A gallery written before the registry existed gets one, computed from its templates."""
    old = Gallery(gallery_settings, "older-model-0000", DIM)
    old.add("legacy", "kim", _templates("kim", _unit(11), 2))
    old.add("legacy", "lee", _templates("lee", _unit(12), 1))
    old.connection.call("drop_collection", old.registry.collection)
    reopened = Gallery(gallery_settings, "older-model-0000", DIM)
    assert reopened.users("legacy") == ["kim", "lee"]
    assert [r.templates for r in reopened.user_records("legacy")] == [2, 1]
    reopened.drop()


def test_lite_file_held_by_another_process_is_a_clear_error(tmp_path: Path) -> None:
    """Milvus Lite opens a file in one process only: the second gets Unavailable that says
    to use a server."""
    uri = str(tmp_path / "held.db")
    Gallery(GallerySettings(uri=uri), MODEL, DIM)
    code = (
        "from facegallery.core.config import GallerySettings\n"
        "from facegallery.core.errors import Unavailable\n"
        "from facegallery.gallery import Gallery\n"
        "try:\n"
        f"    Gallery(GallerySettings(uri={uri!r}), {MODEL!r}, {DIM})\n"
        "except Unavailable as exc:\n"
        "    print(exc.message)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120
    )
    assert "milvus start" in out.stdout, out.stdout + out.stderr


def test_server_grouping_where_it_exists_and_why_it_is_not_the_default(
    gallery_settings: GallerySettings, gallery: Gallery
) -> None:
    """``grouping: server`` agrees with the client-side grouping (max) on Lite. Milvus server 2.3
    ignores ``group_by_field``: its 3 hits are templates of one user, so asking for 3 users
    yields fewer, where the client-side grouping yields 3."""
    people = {f"g{u}": _unit(700 + u) for u in range(6)}
    for user, base in people.items():
        gallery.add("modes", user, _templates(user, base, 5, noise=0.05))
    probe = _unit(777, people["g0"], 0.2)
    client = _with_fusion(gallery, "max").search("modes", probe[None], 3)[0]
    server_settings = gallery_settings.model_copy(update={"grouping": "server", "fusion": "max"})
    grouped = Gallery(server_settings, MODEL, DIM)
    server = grouped.search("modes", probe[None], 3)[0]
    if gallery.embedded:
        assert [c.user_id for c in server] == [c.user_id for c in client]
        assert [c.score for c in server] == pytest.approx([c.score for c in client], abs=1e-5)
    else:
        assert len(client) == 3
        assert len(server) < 3, "server 2.3 grouped by user: revisit the default"


def test_template_sample_is_a_seeded_range_of_about_the_asked_size(gallery: Gallery) -> None:
    batch = {f"s{u}": _templates(f"s{u}", _unit(u), 4, tag="sample") for u in range(250)}
    gallery.add_many("sampled", batch)
    users, vectors = gallery.sample_templates("sampled", 200, seed=1)
    assert 140 <= len(users) <= 260  # a range of 1/5 of the id space: binomial around 200
    assert vectors.shape == (len(users), DIM)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert sorted(gallery.sample_templates("sampled", 200, seed=1)[0]) == sorted(users)
    # Other seeds start elsewhere (some ranges wrap around the end of the id space).
    samples = [gallery.sample_templates("sampled", 200, seed=s)[0] for s in range(2, 10)]
    assert all(140 <= len(s) <= 260 for s in samples)
    assert any(sorted(s) != sorted(users) for s in samples)
    everyone, _ = gallery.sample_templates("sampled", 5000, seed=1)
    assert sorted(everyone) == sorted(u for u in batch for _ in range(4))


def test_calibration_is_stored_beside_the_gallery(
    gallery: Gallery, gallery_settings: GallerySettings
) -> None:
    assert gallery.impostor_samples.get("calibrated") is None
    first = ImpostorSample("calibrated", 10, 30, 30, (0.61, 0.5, 0.25), 1, "score")
    gallery.impostor_samples.put(first)
    second = ImpostorSample("calibrated", 12, 36, 36, (0.2, 0.15), 2, "cohort_gap")
    gallery.impostor_samples.put(second)  # replaces, never duplicates
    reader = Gallery(gallery_settings, MODEL, DIM)  # another process's view
    assert reader.impostor_samples.get("calibrated") == second
    assert reader.impostor_samples.get("elsewhere") is None
    # A row written before the statistic was named holds a plain list of best scores.
    legacy = {
        "gallery": "legacy",
        "users": 3,
        "templates": 9,
        "searches": 9,
        "calibrated_at": 3,
        "tail": json.dumps([0.5, 0.4]),
        PLACEHOLDER: PLACEHOLDER_ROW,
    }
    gallery.connection.replace(gallery.impostor_samples.collection, "gallery", [legacy], {"legacy"})
    gallery.connection.settle(gallery.impostor_samples.collection)
    assert gallery.impostor_samples.get("legacy") == ImpostorSample(
        "legacy", 3, 9, 9, (0.5, 0.4), 3, "score"
    )
