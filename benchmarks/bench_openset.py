"""Open-set identification as the gallery grows: measured FPIR and FNIR against gallery size.

Mates and strangers come from one folder-per-identity set (``celeba_150``), split into two
seeded halves of people: in one fold the first half is enrolled (their first 3 photos, fewer
for people with fewer than 4) and their other photos are mated searches, while every photo of
the second half is a non-mated search (a stranger); the second fold swaps the halves, and the
counts of both folds are pooled. The gallery grows with distractors: people of another set
(``celeba_train``, identity-disjoint) enrolled with up to 3 photos and never searched as
mates. A seeded ``--holdout`` of that set's people is never enrolled: their photos are a
second group of strangers, from the population most of the large galleries are made of.

At each size, through the real gallery (Milvus Lite, exact search) and the product's own
calibrator, once for each template fusion the product offers (``gallery.fusion``: ``max``,
``top2_mean``), the decision at the threshold of:

- ``fixed_1to1``: the shipped 1:1 threshold (FAR 1e-3 on pairs), what identify used before;
- ``far_extended``: the pair calibration's impostor model extended to the gallery
  (``openset.far_comparisons``);
- ``self_calibrated``: leave-one-user-out searches of the gallery's own templates (here at
  every size, even where too few templates make it noisy), deciding on
  ``matching.statistic`` (the cohort gap by default);
- ``default``: what identify does by default (self-calibrated where the gallery holds enough
  templates for ``min_false_positives``, else far_extended);

and ``oracle``: FNIR at the threshold set on the celeba_150 non-mated searches themselves
(the best any threshold rule could do at that FPIR) on the product's statistic,
``oracle_score`` on the best score (the usual FNIR@FPIR). The fixed and far_extended
thresholds are cosines and decide on the best score. ``fpir`` counts the
celeba_150 strangers, ``holdout_fpir`` the held-out celeba_train ones. ``numpy_fusion``
compares three fusions exactly in numpy on the same templates and searches (the best
template, the mean of the best two, the cosine to the user's mean template), each at its own
self-calibrated threshold (all templates searched) and at the oracle threshold.
``numpy_decision`` does the same for what the decision compares with the threshold, under the
product's fusion: the best user's score (``matching.statistic: score``), or that score
normalised by the probe's cohort, the other users of the fused shortlist
(``gallery.cohort_size``): minus their mean (``cohort_gap``), minus the second best
(``top2_gap``), or as a z-score (``cohort_z``). Every FPIR comes with its 95% (Wilson)
interval: a few false positives decide it.

    .venv/bin/python benchmarks/bench_openset.py --json benchmarks/results/openset.json \\
        --plot benchmarks/results/openset.png
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import numpy as np

from facegallery.core.config import FusionName, GallerySettings, MatchingSettings, load_settings
from facegallery.core.limits import IMAGE_SUFFIXES
from facegallery.decisions.openset import (
    OpenSetCalibrator,
    far_comparisons,
    far_extended_threshold,
)
from facegallery.decisions.rates import threshold_at_rate
from facegallery.decisions.thresholds import Thresholds
from facegallery.evaluation.identify import (
    DISTRACTOR,
    EVAL_GALLERY,
    Split,
    eval_gallery,
    search,
    user_id,
)
from facegallery.evaluation.metrics import open_set_rates
from facegallery.evaluation.runner import embed_images, largest_face_embedder
from facegallery.vision.pipeline import FacePipeline
from facegallery.wire.wording import SCORE
from report import FACES, emit

PER_USER = 3
SEED = 7
THRESHOLD_METHODS = ("fixed_1to1", "far_extended", "self_calibrated", "default")
PRODUCT_FUSIONS: tuple[str, ...] = get_args(FusionName)
FUSIONS = (*PRODUCT_FUSIONS, "mean_template")
COHORT = GallerySettings().cohort_size


def _cohort_mean(s: np.ndarray) -> np.ndarray:
    return np.asarray(s[:, 1:].mean(axis=1))


DECISIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "cosine": lambda s: s[:, 0],
    "cohort_gap": lambda s: s[:, 0] - _cohort_mean(s),
    "top2_gap": lambda s: s[:, 0] - s[:, 1],
    "cohort_z": lambda s: (s[:, 0] - _cohort_mean(s)) / (s[:, 1:].std(axis=1) + 1e-6),
}


def wilson(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a rate (sound at a handful of events)."""
    if trials == 0:
        return (0.0, 1.0)
    rate = successes / trials
    centre = (rate + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * np.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials * trials))
    half /= 1 + z * z / trials
    return (round(max(0.0, centre - half), 5), round(min(1.0, centre + half), 5))


def people(root: Path) -> dict[str, list[Path]]:
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    return {
        f.name: sorted(p for p in f.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for f in folders
    }


def embeddings(
    pipeline: FacePipeline, photos: list[Path], cache: Path, name: str
) -> dict[Path, np.ndarray | None]:
    """Every photo's largest-face embedding, cached per model id and set."""
    path = cache / f"openset-{pipeline.model_id}-{name}.npz"
    if path.is_file():
        stored = np.load(path)
        found = dict(zip(stored["paths"].tolist(), stored["vectors"], strict=True))
        if set(found) >= {str(p) for p in photos}:
            return {
                p: (v if np.isfinite(v).all() else None)
                for p, v in ((p, found[str(p)]) for p in photos)
            }
    vectors = embed_images(largest_face_embedder(pipeline), photos, progress=True)
    dim = pipeline.embedder.dimension
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        paths=np.array([str(p) for p in photos]),
        vectors=np.stack([v if v is not None else np.full(dim, np.nan) for v in vectors.values()]),
    )
    return vectors


def fold_split(mates: dict[str, list[Path]], enrolled: set[str]) -> Split:
    enroll, mated, nonmated = {}, [], []
    for name, photos in mates.items():
        if name in enrolled:
            k = min(PER_USER, len(photos) - 1)
            enroll[name] = photos[:k]
            mated += [(p, name) for p in photos[k:]]
        else:
            nonmated += photos
    return Split(enroll, mated, nonmated)


@dataclass
class Tally:
    """Pooled counts over the folds for one way of choosing the threshold."""

    false_positives: int = 0
    nonmated: int = 0
    misses: int = 0
    mated: int = 0
    holdout_false_positives: int = 0
    holdout: int = 0
    thresholds: list[float] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)

    def add(
        self,
        threshold: float,
        ok: np.ndarray,
        mated: np.ndarray,
        nonmated: np.ndarray,
        holdout: np.ndarray | None = None,
    ) -> None:
        fpir, fnir = open_set_rates(threshold, ok, mated, nonmated)
        self.false_positives += round(fpir * len(nonmated))
        self.nonmated += len(nonmated)
        self.misses += round(fnir * len(mated))
        self.mated += len(mated)
        if holdout is not None and len(holdout):
            self.holdout_false_positives += int((holdout >= threshold).sum())
            self.holdout += len(holdout)
        self.thresholds.append(round(threshold, 4))

    def fpir(self) -> float:
        return self.false_positives / self.nonmated

    def fnir(self) -> float:
        return self.misses / self.mated

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "threshold": self.thresholds,
            "fpir": round(self.fpir(), 5),
            "fpir_interval_95": wilson(self.false_positives, self.nonmated),
            "fnir": round(self.fnir(), 5),
            "false_positives": self.false_positives,
        }
        if self.holdout:
            out["holdout_fpir"] = round(self.holdout_false_positives / self.holdout, 5)
            out["holdout_fpir_interval_95"] = wilson(self.holdout_false_positives, self.holdout)
        if self.methods:
            out["method"] = self.methods
        return out


def fused_scores(
    probes: np.ndarray, templates: list[np.ndarray], fusion: str, exclude: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """(best user index, the ``COHORT`` best users' scores, descending) per probe, a user's
    score fused from their templates; ``exclude[i]``: a user the i-th probe may not match
    (its own), or -1."""
    users = len(templates)
    k = max(len(t) for t in templates)
    dim = probes.shape[1]
    padded = np.zeros((users, k, dim), np.float32)
    valid = np.zeros((users, k), bool)
    for u, t in enumerate(templates):
        padded[u, : len(t)] = t
        valid[u, : len(t)] = True
    means = padded.sum(axis=1) / valid.sum(axis=1, keepdims=True)
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    top_user = np.zeros(len(probes), int)
    top_scores = np.zeros((len(probes), min(COHORT, users)))
    for start in range(0, len(probes), 256):
        chunk = probes[start : start + 256]
        if fusion == "mean_template":
            per_user = chunk @ means.T
        else:
            scores = (chunk @ padded.reshape(-1, dim).T).reshape(len(chunk), users, k)
            scores = np.where(valid[None], scores, -np.inf)
            if fusion == "max":
                per_user = scores.max(axis=2)
            else:
                ranked = -np.sort(-scores, axis=2)[:, :, :2]
                two = valid.sum(axis=1) >= 2
                per_user = np.where(two[None], ranked.mean(axis=2), ranked[:, :, 0])
        if exclude is not None:
            rows = np.arange(len(chunk))
            per_user[rows, exclude[start : start + 256]] = -np.inf
        ranked_users = np.argsort(-per_user, axis=1)[:, :COHORT]
        top_user[start : start + len(chunk)] = ranked_users[:, 0]
        top_scores[start : start + len(chunk)] = np.take_along_axis(per_user, ranked_users, 1)
    return top_user, top_scores


def fusion_tallies(
    gallery_people: dict[str, list[Path]],
    split: Split,
    vectors: dict[Path, np.ndarray | None],
    holdout: np.ndarray,
    fpir: float,
    tallies: dict[str, dict[str, Tally]],
    decisions: dict[str, dict[str, Tally]],
    product_fusion: str,
) -> dict[str, Any]:
    """One fold in numpy: each fusion's best-user score, and under ``product_fusion`` each
    decision statistic, at its own self-calibrated threshold and at the oracle's. Returns
    the top of the product fusion's leave-one-out evidence (``loo_tail``)."""
    names = [u for u, ps in gallery_people.items() if any(vectors[p] is not None for p in ps)]
    templates = [
        np.stack([v for p in gallery_people[u] if (v := vectors[p]) is not None]) for u in names
    ]
    index = {u: i for i, u in enumerate(names)}
    owner = np.concatenate([np.full(len(t), i) for i, t in enumerate(templates)])
    everything = np.concatenate(templates)
    mated = [(v, index[user_id(n)]) for p, n in split.mated if (v := vectors[p]) is not None]
    nonmated = np.stack([v for p in split.nonmated if (v := vectors[p]) is not None])
    mated_vectors = np.stack([v for v, _ in mated])
    mate = np.array([u for _, u in mated])
    missing_mated = len(split.mated) - len(mated)
    missing_nonmated = len(split.nonmated) - len(nonmated)
    tail: dict[str, Any] = {}
    for fusion in FUSIONS:
        best_other, impostor = fused_scores(everything, templates, fusion, owner)
        top, mated_scores = fused_scores(mated_vectors, templates, fusion, None)
        _, nonmated_scores = fused_scores(nonmated, templates, fusion, None)
        _, holdout_scores = fused_scores(holdout, templates, fusion, None)
        ok = np.concatenate([top == mate, np.zeros(missing_mated, bool)])
        chosen = DECISIONS if fusion == product_fusion else {"cosine": DECISIONS["cosine"]}
        for name, statistic in chosen.items():
            self_threshold = threshold_at_rate(statistic(impostor), fpir)
            mated_all = np.concatenate([statistic(mated_scores), np.full(missing_mated, np.nan)])
            nonmated_all = np.concatenate(
                [statistic(nonmated_scores), np.full(missing_nonmated, np.nan)]
            )
            oracle = threshold_at_rate(nonmated_all, fpir)
            assert self_threshold is not None and oracle is not None
            held = statistic(holdout_scores)
            targets = [decisions[name]] if fusion == product_fusion else []
            if name == "cosine":
                targets.append(tallies[fusion])
            for into in targets:
                into["self_calibrated"].add(self_threshold, ok, mated_all, nonmated_all, held)
                into["oracle"].add(oracle, ok, mated_all, nonmated_all, held)
        if fusion == product_fusion:
            tail = loo_tail(impostor[:, 0], owner, best_other, nonmated_scores, holdout_scores)
    return tail


def loo_tail(
    impostor: np.ndarray,
    owner: np.ndarray,
    best_other: np.ndarray,
    nonmated: np.ndarray,
    holdout: np.ndarray,
) -> dict[str, Any]:
    """The highest leave-one-out scores beside the highest any stranger reached, and whether
    each is reciprocal (the other user's own templates find this user best too: the mark of
    one person enrolled under two ids, which CelebA's noisy labels make)."""
    finds = {(int(o), int(b)) for o, b in zip(owner, best_other, strict=True)}
    order = np.argsort(-impostor)[:20]
    reciprocal = [(int(best_other[i]), int(owner[i])) in finds for i in order]
    highest_stranger = max(float(nonmated[:, 0].max()), float(holdout[:, 0].max()))
    above = impostor > highest_stranger
    return {
        "loo_top": [round(float(impostor[i]), 4) for i in order],
        "loo_top_reciprocal": reciprocal,
        "nonmated_max": round(float(nonmated[:, 0].max()), 4),
        "holdout_max": round(float(holdout[:, 0].max()), 4),
        "loo_above_every_stranger": int(above.sum()),
        "loo_searches": len(impostor),
    }


class Bench:
    """The two folds' people and embeddings, and the product's calibration settings."""

    def __init__(
        self,
        matching: MatchingSettings,
        fpir: float,
        pipeline: FacePipeline,
        mates: dict[str, list[Path]],
        extra: dict[str, list[Path]],
        vectors: dict[Path, np.ndarray | None],
        holdout: int,
        product_fusion: str,
    ) -> None:
        self.matching = matching
        self.product_fusion = product_fusion
        self.forced = matching.model_copy(update={"min_false_positives": 1})
        self.thresholds = Thresholds(matching)
        self.pairs = self.thresholds.get(pipeline.model_id)
        self.fpir = fpir
        self.pipeline = pipeline
        self.mates, self.extra, self.vectors = mates, extra, vectors
        rng = np.random.default_rng(SEED)
        order = list(rng.permutation(sorted(mates)))
        self.halves = [set(order[: len(order) // 2]), set(order[len(order) // 2 :])]
        distractors = list(rng.permutation(sorted(extra)))
        self.distractor_order = distractors[: len(distractors) - holdout]
        held = distractors[len(distractors) - holdout :]
        self.holdout = [p for n in held for p in extra[n]]

    def measure(self, size: int) -> dict[str, Any]:
        """Both folds at one gallery size, pooled, for each product fusion."""
        methods = (*THRESHOLD_METHODS, "oracle", "oracle_score")
        tallies = {f: {m: Tally() for m in methods} for f in PRODUCT_FUSIONS}
        fusion = {f: {"self_calibrated": Tally(), "oracle": Tally()} for f in FUSIONS}
        decisions = {d: {"self_calibrated": Tally(), "oracle": Tally()} for d in DECISIONS}
        tails: list[dict[str, Any]] = []
        held = np.stack([v for p in self.holdout if (v := self.vectors[p]) is not None])
        users = templates = 0
        calibration_s: dict[str, list[float]] = {f: [] for f in PRODUCT_FUSIONS}
        for enrolled in self.halves:
            split = fold_split(self.mates, enrolled)
            count = max(0, min(size - len(split.enroll), len(self.distractor_order)))
            gallery_people = {user_id(n): ps for n, ps in split.enroll.items()} | {
                DISTRACTOR + user_id(n): self.extra[n][:PER_USER]
                for n in self.distractor_order[:count]
            }
            for product_fusion in PRODUCT_FUSIONS:
                users, templates = self.measure_fusion(
                    product_fusion, gallery_people, split, tallies, calibration_s
                )
            tails.append(
                fusion_tallies(
                    gallery_people,
                    split,
                    self.vectors,
                    held,
                    self.fpir,
                    fusion,
                    decisions,
                    self.product_fusion,
                )
            )
        first = tallies[PRODUCT_FUSIONS[0]]["default"]
        return {
            "gallery_users": users,
            "gallery_templates": templates,
            "mated_searches": first.mated,
            "nonmated_searches": first.nonmated,
            "holdout_searches": first.holdout,
            "fusions": {f: {m: t.report() for m, t in ts.items()} for f, ts in tallies.items()},
            "numpy_fusion": {f: {m: t.report() for m, t in ts.items()} for f, ts in fusion.items()},
            "loo_tail": tails,
            "numpy_decision": {
                d: {m: t.report() for m, t in ts.items()} for d, ts in decisions.items()
            },
            "self_calibration_seconds": calibration_s,
        }

    def measure_fusion(
        self,
        product_fusion: str,
        gallery_people: dict[str, list[Path]],
        split: Split,
        tallies: dict[str, dict[str, Tally]],
        calibration_s: dict[str, list[float]],
    ) -> tuple[int, int]:
        """One fold through a real gallery scoring users by ``product_fusion``: each method's
        threshold applied to the statistic it is stated in (the score for the fixed and the
        pair-model thresholds, ``matching.statistic`` for a self-calibrated one); the oracle's
        set on the strangers' values of the product's statistic, ``oracle_score``'s on their
        scores."""
        model, dim = self.pipeline.model_id, self.pipeline.embedder.dimension
        strangers = Split({}, [], self.holdout)
        with eval_gallery(gallery_people, self.vectors, model, dim, product_fusion) as (
            gallery,
            _,
        ):
            default = OpenSetCalibrator(gallery, self.thresholds, self.matching)
            point = default.operating_point(EVAL_GALLERY, self.fpir)
            start = time.perf_counter()
            forced = OpenSetCalibrator(gallery, self.thresholds, self.forced)
            self_point = forced.operating_point(EVAL_GALLERY, self.fpir)
            calibration_s[product_fusion].append(round(time.perf_counter() - start, 2))
            found = search(forced, self_point, split, self.vectors)
            held = search(forced, self_point, strangers, self.vectors)
            stats = gallery.stats(EVAL_GALLERY)
        values = {
            SCORE: (found.mated_score, found.nonmated_score, held.nonmated_score),
            self_point.statistic: (
                found.mated_decision,
                found.nonmated_decision,
                held.nonmated_decision,
            ),
        }
        comparisons = far_comparisons(stats, product_fusion)
        product = self_point.statistic
        chosen = {
            "fixed_1to1": (self.pairs.threshold, SCORE),
            "far_extended": (far_extended_threshold(self.pairs, comparisons, self.fpir), SCORE),
            "self_calibrated": (self_point.threshold, product),
            "default": (point.threshold, point.statistic),
            "oracle": (threshold_at_rate(values[product][1], self.fpir) or 1.0, product),
            "oracle_score": (threshold_at_rate(found.nonmated_score, self.fpir) or 1.0, SCORE),
        }
        ok = found.mate_rank == 1
        for method, (threshold, statistic) in chosen.items():
            mated, nonmated, strangers_held = values[statistic]
            tallies[product_fusion][method].add(
                threshold, ok, mated, nonmated, strangers_held[np.isfinite(strangers_held)]
            )
        tallies[product_fusion]["default"].methods.append(point.method)
        return stats.users, stats.templates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mates", type=Path, default=FACES / "celeba_150")
    parser.add_argument("--distractors", type=Path, default=FACES / "celeba_train")
    parser.add_argument("--sizes", type=int, nargs="+", default=[150, 500, 1000, 2600])
    parser.add_argument(
        "--holdout", type=int, default=300, help="distractor-set people never enrolled"
    )
    parser.add_argument("--fpir", type=float, default=None, help="default: the configured one")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache/facegallery/bench")
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    parser.add_argument("--plot", type=Path, help="write the FPIR / FNIR plot here")
    args = parser.parse_args()

    settings = load_settings()
    fpir = args.fpir if args.fpir is not None else settings.matching.target_fpir
    pipeline = FacePipeline.from_settings(settings)
    mates = people(args.mates)
    extra = people(args.distractors)
    vectors = embeddings(
        pipeline, [p for ps in mates.values() for p in ps], args.cache, args.mates.name
    )
    vectors |= embeddings(
        pipeline, [p for ps in extra.values() for p in ps], args.cache, args.distractors.name
    )
    bench = Bench(
        settings.matching,
        fpir,
        pipeline,
        mates,
        extra,
        vectors,
        args.holdout,
        settings.gallery.fusion,
    )
    rows = []
    for size in args.sizes:
        rows.append(bench.measure(size))
        for name, methods in rows[-1]["fusions"].items():
            summary = ", ".join(
                f"{m} {r['fpir']:.4f}/{r.get('holdout_fpir', 0):.4f}/{r['fnir']:.4f}"
                for m, r in methods.items()
            )
            print(f"{rows[-1]['gallery_users']} users, {name}: FPIR/holdout/FNIR: {summary}")

    results = {
        "benchmark": "openset",
        "model_id": pipeline.model_id,
        "target_fpir": fpir,
        "mates": args.mates.name,
        "distractors": args.distractors.name,
        "per_user": PER_USER,
        "holdout_people": args.holdout,
        "product_fusion": settings.gallery.fusion,
        "sizes": rows,
    }
    emit(results, args.json)
    if args.plot:
        plot(rows, fpir, settings.gallery.fusion, args.plot)


def plot(rows: list[dict[str, Any]], fpir: float, fusion: str, path: Path) -> None:
    """Each threshold rule under the product's fusion (solid); identify before issue 15
    (dashed: ``max`` at the fixed threshold) and the best its score could do at the target
    (``oracle_score`` under ``max``: the FNIR target's reference); the default's FPIR on
    held-out strangers (dotted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    users = [r["gallery_users"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), dpi=120)
    lines = [(fusion, m, "-") for m in (*THRESHOLD_METHODS, "oracle", "oracle_score")]
    lines += [("max", "fixed_1to1", "--"), ("max", "oracle_score", "--")]
    for i, (name, method, style) in enumerate(lines):
        results = [r["fusions"][name][method] for r in rows]
        look = {"marker": "o", "label": f"{method} ({name})", "color": f"C{i}"}
        if not method.startswith("oracle"):
            left.plot(users, [max(x["fpir"], 1e-4) for x in results], style, **look)
        right.plot(users, [x["fnir"] for x in results], style, **look)
    held = [max(r["fusions"][fusion]["default"].get("holdout_fpir", 0), 1e-4) for r in rows]
    left.plot(users, held, ":", marker="s", color="black", label=f"default ({fusion}), held-out")
    left.axhspan(fpir / 2, fpir * 2, color="green", alpha=0.1, label="0.5x-2x target")
    left.axhline(fpir, color="green", linestyle="--", linewidth=1)
    left.set(xscale="log", yscale="log", xlabel="gallery users", ylabel="measured FPIR")
    right.set(xscale="log", xlabel="gallery users", ylabel="measured FNIR (rank 1)")
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"identify at target FPIR {fpir}: strangers matched, mates missed")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
