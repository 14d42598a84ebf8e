"""Gallery search and insert speed on Milvus Lite, beside an exact numpy search, in one run.

Synthetic galleries of 1k, 10k and 100k unit templates (5 per user, clustered like photos of
one person); probes near a random user. Per size: insert throughput through Gallery.add (one
call per user, as enrollment does, then one flush), search latency p50/p99 with 1 and 32
probes per call (grouped by user, top 10), the same searches in numpy brute force (the
baseline), recall@10 of the gallery against that exact answer, and end-to-end identify ms for
a real photo.

    .venv/bin/python benchmarks/bench_gallery.py --json benchmarks/results/gallery.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from facegallery.config import Settings, load_settings
from facegallery.gallery import Gallery, NewTemplate
from facegallery.matching import Thresholds
from facegallery.pipeline import FacePipeline
from facegallery.samples import fetch_samples
from facegallery.service import FaceService
from report import emit

PER_USER = 5
TOP_K = 10
GALLERY = "bench"


def percentiles(work: Callable[[], object], calls: int) -> tuple[float, float]:
    """(p50, p99) milliseconds per call, after two warm-up calls."""
    work()
    work()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        work()
        times.append(1000 * (time.perf_counter() - start))
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def synthetic(n: int, dim: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(templates (n, dim), centres (n / PER_USER, dim)); user u owns rows u*5 .. u*5+4."""
    centres = rng.normal(size=(n // PER_USER, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    noise = rng.normal(size=(n, dim)).astype(np.float32) * (0.9 / np.sqrt(dim))
    templates = np.repeat(centres, PER_USER, axis=0) + noise
    return templates / np.linalg.norm(templates, axis=1, keepdims=True), centres


def probes_near(centres: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    picks = centres[rng.integers(0, len(centres), count)]
    p = picks + rng.normal(size=picks.shape).astype(np.float32) * (1.0 / np.sqrt(centres.shape[1]))
    unit: np.ndarray = (p / np.linalg.norm(p, axis=1, keepdims=True)).astype(np.float32)
    return unit


def exact_top_users(templates: np.ndarray, probes: np.ndarray) -> np.ndarray:
    """The exact baseline: every template scored, each user by their best, top 10 users."""
    scores = probes @ templates.T
    per_user = scores.reshape(len(probes), -1, PER_USER).max(axis=2)
    top = np.argpartition(-per_user, TOP_K, axis=1)[:, :TOP_K]
    order = np.take_along_axis(per_user, top, axis=1).argsort(axis=1)[:, ::-1]
    users: np.ndarray = np.take_along_axis(top, order, axis=1)
    return users


def measure(
    n: int, index: str, scratch: Path, pipeline: FacePipeline, settings: Settings, photo: bytes
) -> dict[str, object]:
    """Every number for one gallery size and index type."""
    rng = np.random.default_rng(n)
    dim = pipeline.embedder.dimension
    templates, centres = synthetic(n, dim, rng)
    gallery_settings = settings.gallery.model_copy(
        update={"uri": str(scratch / f"{n}-{index}.db"), "index_type": index}
    )
    gallery = Gallery(gallery_settings, pipeline.model_id, dim)
    start = time.perf_counter()
    for u in range(len(centres)):
        block = templates[u * PER_USER : (u + 1) * PER_USER]
        rows = [NewTemplate(f"{u:024x}{k:08x}", v, 1.0, "synthetic") for k, v in enumerate(block)]
        gallery.add(GALLERY, f"user{u:06d}", rows, flush=False)
    gallery.flush()
    insert_s = time.perf_counter() - start

    probes = probes_near(centres, 256, rng)
    turn = iter(range(10**9))
    one = percentiles(lambda: gallery.search(GALLERY, probes[next(turn) % 256][None], TOP_K), 200)
    many = percentiles(lambda: gallery.search(GALLERY, probes[:32], TOP_K), 40)
    base_one = percentiles(lambda: exact_top_users(templates, probes[:1]), 200)
    base_many = percentiles(lambda: exact_top_users(templates, probes[:32]), 40)
    found = gallery.search(GALLERY, probes, TOP_K)
    exact = exact_top_users(templates, probes)
    recall = np.mean(
        [
            len({int(c.user_id[4:]) for c in hits} & set(truth.tolist())) / TOP_K
            for hits, truth in zip(found, exact, strict=True)
        ]
    )
    service = FaceService(pipeline, gallery, Thresholds(settings.matching), settings)
    identify = percentiles(lambda: service.identify(GALLERY, photo), 20)
    return {
        "index": index,
        "templates": n,
        "users": len(centres),
        "insert_templates_per_s": round(n / insert_s, 1),
        "search_1_probe_ms": _ms(one),
        "search_32_probes_ms": _ms(many),
        "numpy_exact_1_probe_ms": _ms(base_one),
        "numpy_exact_32_probes_ms": _ms(base_many),
        "speedup_1_probe_p50": round(base_one[0] / one[0], 2),
        "speedup_32_probes_p50": round(base_many[0] / many[0], 2),
        "recall_at_10": round(float(recall), 4),
        "identify_ms_per_image_p50": round(identify[0], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--indexes", nargs="+", default=["FLAT", "HNSW"])
    args = parser.parse_args()
    settings = load_settings()
    pipeline = FacePipeline.from_settings(settings)
    samples = fetch_samples(settings.samples_dir.expanduser(), settings.models.wheelhouse)
    photo = samples.photo("obama.jpg").read_bytes()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for index in args.indexes:
            for n in args.sizes:
                rows.append(measure(n, index, Path(scratch), pipeline, settings, photo))
                print(json.dumps(rows[-1]), flush=True)
    g = settings.gallery
    results = {
        "gallery": f"Milvus Lite 3.2.2; HNSW M={g.hnsw_m} efConstruction="
        f"{g.hnsw_ef_construction} ef={g.search_ef}",
        "dimension": pipeline.embedder.dimension,
        "sizes": rows,
    }
    emit(results, args.json)


def _ms(p50_p99: tuple[float, float]) -> dict[str, float]:
    return {"p50": round(p50_p99[0], 2), "p99": round(p50_p99[1], 2)}


if __name__ == "__main__":
    main()
