"""Gallery speed and search quality at 100k and 1M templates: the managed Milvus server (HNSW)
and Milvus Lite (exact FLAT), each beside an exact numpy search over the same vectors.

Templates come from a Gaussian model fitted to real SFace embeddings (``embedding_model.py``),
5 per user. Per gallery: insert throughput through ``Gallery.add_many`` in batches of 1,000
users (as bulk enrollment writes), time to index and to load, server RSS; then per HNSW
``ef``: identify-style search latency (top 10 users, grouped by user) for 1 and 32 probes
per call, and against the exact answer over the same vectors: top-1 agreement (the identify
decision) on mated probes (a user's unseen sample) and non-mated probes (a stranger), the
best-score error, and recall@10 of the top-10 users; plus a users page and stats latency.
The sweep and its exact baseline score each user by their best template (``fusion: max``);
``fusion_ms`` then times the same searches at the configured ``ef`` under each fusion, the
default ``top2_mean`` reading the templates of users with one template among the hits.

    .venv/bin/python benchmarks/bench_gallery.py --json benchmarks/results/gallery.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import numpy as np

from embedding_model import EmbeddingModel, fitted
from facegallery.core.config import FusionName, GallerySettings, MilvusServerSettings, load_settings
from facegallery.decisions.thresholds import Thresholds
from facegallery.gallery import Gallery, NewTemplate
from facegallery.servers import MilvusServer
from facegallery.servers.supervisor import free_port
from facegallery.vision.pipeline import FacePipeline
from report import FACES, emit

PER_USER = 5
TOP_K = 10
GALLERY = "bench"
BATCH_USERS = 1000
PROBES = 512


def percentiles(work: Callable[[], object], calls: int) -> dict[str, float]:
    """p50 / p99 milliseconds per call, after two warm-up calls."""
    work()
    work()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        work()
        times.append(1000 * (time.perf_counter() - start))
    return {
        "p50": round(float(np.percentile(times, 50)), 2),
        "p99": round(float(np.percentile(times, 99)), 2),
    }


def exact_top_users(templates: np.ndarray, probes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The baseline: every template scored, each user by their best; (users, scores) of the
    top 10 per probe, best first."""
    users, scores = [], []
    for start in range(0, len(probes), 32):
        s = probes[start : start + 32] @ templates.T
        per_user = s.reshape(len(s), -1, PER_USER).max(axis=2)
        top = np.argpartition(-per_user, TOP_K, axis=1)[:, :TOP_K]
        top_scores = np.take_along_axis(per_user, top, axis=1)
        order = np.argsort(-top_scores, axis=1)
        users.append(np.take_along_axis(top, order, axis=1))
        scores.append(np.take_along_axis(top_scores, order, axis=1))
    return np.concatenate(users), np.concatenate(scores)


def load(gallery: Gallery, templates: np.ndarray) -> float:
    """Insert every template through the gallery, BATCH_USERS users per call; seconds."""
    users = len(templates) // PER_USER
    start = time.perf_counter()
    for first in range(0, users, BATCH_USERS):
        batch = {
            f"user{u:07d}": [
                NewTemplate(f"{u:024x}{k:08x}", templates[u * PER_USER + k], 1.0, "synthetic")
                for k in range(PER_USER)
            ]
            for u in range(first, min(users, first + BATCH_USERS))
        }
        gallery.add_many(GALLERY, batch, settle=False)
    gallery.settle()
    return time.perf_counter() - start


def wait_indexed(gallery: Gallery, rows: int) -> float:
    """Seal, then wait until the index covers every row; seconds. (Not until
    ``pending_index_rows`` is 0: on 2.3.5 it stayed at the row count after the build had
    finished and every segment was served with its index.)"""
    start = time.perf_counter()
    client = gallery.connection.client
    client.flush(gallery.collection)
    while True:
        info = client.describe_index(gallery.collection, "embedding")
        if int(info.get("indexed_rows", 0)) >= rows and info.get("state") == "Finished":
            return time.perf_counter() - start
        time.sleep(2)


def reload(gallery: Gallery) -> float:
    start = time.perf_counter()
    gallery.connection.call("release_collection", gallery.collection)
    gallery.connection.call("load_collection", gallery.collection)
    return time.perf_counter() - start


def quality(
    gallery: Gallery,
    probes: np.ndarray,
    exact_users: np.ndarray,
    exact_scores: np.ndarray,
    threshold: float,
) -> dict[str, float]:
    """Against the exact answer: top-1 agreement, the identify decision at the operating
    threshold (a user, or unknown) agreeing, best-score error, and recall@10."""
    found = []
    for start in range(0, len(probes), 32):
        found += gallery.search(GALLERY, probes[start : start + 32], TOP_K)
    top1 = [
        bool(hits) and int(hits[0].user_id[4:]) == int(t[0])
        for hits, t in zip(found, exact_users, strict=True)
    ]
    error = [
        abs(hits[0].score - float(s[0])) if hits else 1.0
        for hits, s in zip(found, exact_scores, strict=True)
    ]
    recall = [
        len({int(c.user_id[4:]) for c in hits} & set(t.tolist())) / TOP_K
        for hits, t in zip(found, exact_users, strict=True)
    ]
    decisions = [
        (int(hits[0].user_id[4:]) if hits and hits[0].score >= threshold else -1)
        == (int(t[0]) if float(s[0]) >= threshold else -1)
        for hits, t, s in zip(found, exact_users, exact_scores, strict=True)
    ]
    return {
        "top1_agreement": round(float(np.mean(top1)), 4),
        "decision_agreement": round(float(np.mean(decisions)), 4),
        "best_score_error_mean": round(float(np.mean(error)), 5),
        "best_score_error_max": round(float(np.max(error)), 5),
        "recall_at_10": round(float(np.mean(recall)), 4),
    }


def rss_mb(server: MilvusServer | None) -> float | None:
    if server is None or server.status().pid is None:
        return None
    for line in Path(f"/proc/{server.status().pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def fusion_latency(
    settings: GallerySettings, model_id: str, strangers: np.ndarray
) -> dict[str, dict[str, Any]]:
    """Stranger searches at the configured ``ef`` under each fusion, on the same collection."""
    turn = iter(range(10**9))
    timings = {}
    for fusion in get_args(FusionName):
        fused = Gallery(
            settings.model_copy(update={"fusion": fusion}), model_id, strangers.shape[1]
        )

        def one(g: Gallery = fused) -> object:
            return g.search(GALLERY, strangers[next(turn) % PROBES][None], TOP_K)

        def batch(g: Gallery = fused) -> object:
            return g.search(GALLERY, strangers[:32], TOP_K)

        timings[fusion] = {
            "ef": max(settings.search_ef, TOP_K * settings.max_templates_per_user),
            "1_probe": percentiles(one, 100),
            "32_probes": percentiles(batch, 20),
        }
    return timings


def measure(
    label: str,
    settings: GallerySettings,
    n: int,
    model: EmbeddingModel,
    sweep_values: list[int],
    server: MilvusServer | None,
    threshold: float,
    reuse: bool = False,
) -> dict[str, Any]:
    """Every number for one backend and size; ``sweep_values`` are HNSW ``ef`` or IVF
    ``nprobe`` values, by the index type."""
    rng = np.random.default_rng(n)
    centres = model.centres(n // PER_USER, rng)
    templates = model.around(centres, PER_USER, rng)
    picks = rng.integers(0, len(centres), PROBES)
    mated = model.around(centres[picks], 1, rng)
    strangers = model.around(model.centres(PROBES, rng), 1, rng)
    model_id = f"bench-{label}-{n}"
    gallery = Gallery(settings.model_copy(update={"fusion": "max"}), model_id, len(model.mean))
    row: dict[str, Any] = {
        "backend": label,
        "templates": n,
        "users": len(centres),
        "index": gallery.index_type,
        "index_params": gallery.index_spec()["params"],
    }
    if reuse:  # the same seed made the same vectors: measure the collection already there
        row["insert_templates_per_s"] = row["index_s"] = row["load_s"] = None
    else:
        insert_s = load(gallery, templates)
        row["insert_templates_per_s"] = round(n / insert_s)
    if server is not None and not reuse:
        row["index_s"] = round(wait_indexed(gallery, n), 1)
        row["load_s"] = round(reload(gallery), 1)
    row["server_rss_mb"] = rss_mb(server)
    exact = {
        name: exact_top_users(templates, p)
        for name, p in (("mated", mated), ("nonmated", strangers))
    }
    row["numpy_exact_ms"] = {
        "1_probe": percentiles(lambda: exact_top_users(templates, mated[:1]), 50),
        "32_probes": percentiles(lambda: exact_top_users(templates, mated[:32]), 20),
    }
    turn = iter(range(10**9))
    sweep = []
    ivf = gallery.index_type.startswith("IVF")
    for value in sweep_values:
        if ivf:
            gallery.settings.ivf_nprobe = value
        else:
            gallery.settings.search_ef = value
        limit = TOP_K * gallery.settings.max_templates_per_user
        point: dict[str, Any] = {"nprobe": value} if ivf else {"ef": max(value, limit)}
        point["search_1_probe_ms"] = percentiles(
            lambda: gallery.search(GALLERY, mated[next(turn) % PROBES][None], TOP_K), 200
        )
        point["search_32_probes_ms"] = percentiles(
            lambda: gallery.search(GALLERY, mated[:32], TOP_K), 30
        )
        for name, probes in (("mated", mated), ("nonmated", strangers)):
            point[name] = quality(gallery, probes, *exact[name], threshold)
        sweep.append(point)
        print(json.dumps({"backend": label, "templates": n, **point}), flush=True)
    row["sweep"] = sweep
    row["fusion_ms"] = fusion_latency(settings, model_id, strangers)
    gallery.settings.read_consistency = "Strong"
    row["search_1_probe_strong_ms"] = percentiles(
        lambda: gallery.search(GALLERY, mated[:1], TOP_K), 30
    )
    gallery.settings.read_consistency = "Bounded"
    cursors = [f"user{u:07d}" for u in rng.integers(0, len(centres), 64)]
    row["users_page_100_ms"] = percentiles(
        lambda: gallery.users(GALLERY, cursors[next(turn) % 64], 100), 50
    )
    row["stats_ms"] = percentiles(lambda: gallery.stats(GALLERY), 20)
    stats = gallery.stats(GALLERY)
    row["stats"] = {"users": stats.users, "templates": stats.templates}
    gallery.drop()
    print(json.dumps({k: v for k, v in row.items() if k != "sweep"}), flush=True)
    return row


def realism(model: EmbeddingModel, threshold: float) -> dict[str, float]:
    """How the synthetic scores compare with the real ones: the shipped threshold (FAR 1e-3,
    TAR 89.5% on celeba_150 pairs) applied to synthetic mated and non-mated pairs."""
    rng = np.random.default_rng(7)
    centres = model.centres(20_000, rng)
    a, b = model.around(centres, 1, rng), model.around(centres, 1, rng)
    genuine = np.sum(a * b, axis=1)
    impostor = np.sum(a * np.roll(b, 1, axis=0), axis=1)
    return {
        "genuine_cosine_mean": round(float(genuine.mean()), 4),
        "impostor_cosine_mean": round(float(impostor.mean()), 4),
        "tar_at_shipped_threshold": round(float((genuine >= threshold).mean()), 4),
        "far_at_shipped_threshold": round(float((impostor >= threshold).mean()), 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    parser.add_argument("--server-sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--lite-sizes", type=int, nargs="*", default=[100_000])
    parser.add_argument(
        "--sweep",
        type=int,
        nargs="+",
        default=[128, 256, 512, 1024],
        help="HNSW ef (or IVF nprobe, with FACEGALLERY_GALLERY__INDEX_TYPE=IVF_FLAT) values",
    )
    parser.add_argument("--fit-root", type=Path, default=FACES / "celeba_train")
    parser.add_argument("--fit-identities", type=int, default=1200)
    parser.add_argument(
        "--reuse-uri",
        help="measure searches on the galleries a run left on this server (same sizes)",
    )
    args = parser.parse_args()
    settings = load_settings()
    pipeline = FacePipeline.from_settings(settings)
    cache = settings.models.dir.expanduser().parent / "bench"
    model = fitted(pipeline, args.fit_root, cache, args.fit_identities, per_identity=3)
    threshold = Thresholds(settings.matching).threshold(pipeline.model_id)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for n in args.lite_sizes:
            lite = settings.gallery.model_copy(update={"uri": str(Path(scratch) / f"lite-{n}.db")})
            rows.append(measure("lite", lite, n, model, args.sweep[:1], None, threshold))
        if args.reuse_uri:
            remote = settings.gallery.model_copy(update={"uri": args.reuse_uri})
            for n in args.server_sizes:
                rows.append(measure("server", remote, n, model, args.sweep, None, threshold, True))
        elif args.server_sizes:
            server_settings = MilvusServerSettings(
                data_dir=Path(scratch) / "milvus", port=free_port(), metrics_port=free_port()
            )
            with MilvusServer(server_settings) as server:
                assert isinstance(server, MilvusServer)
                remote = settings.gallery.model_copy(update={"uri": server.uri})
                for n in args.server_sizes:
                    rows.append(measure("server", remote, n, model, args.sweep, server, threshold))
    g, m = settings.gallery, settings.milvus
    emit(
        {
            "milvus": "server: Milvus standalone 2.3.5 (pinned `milvus` wheel), "
            f"time tick {m.time_tick_ms} ms, segments {m.segment_max_size_mb} MB sealed at "
            f"{m.segment_seal_proportion}; Lite: milvus-lite 3.2.2",
            "threshold": threshold,
            "grouping": f"{g.grouping}: top {TOP_K} users from "
            f"{TOP_K}x{g.max_templates_per_user} hits",
            "embedding_model": {
                "fitted_on": str(args.fit_root.name),
                "identities": model.identities,
                "images": model.images,
                **realism(model, threshold),
            },
            "probes": {"mated": PROBES, "nonmated": PROBES},
            "sizes": rows,
        },
        args.json,
    )


if __name__ == "__main__":
    main()
