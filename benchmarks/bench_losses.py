"""The talk's comparison, reproduced: one backbone, every metric-learning loss, same budget.

Each loss trains the same quarter-width IResNet-18 (``facegallery train``, default recipe:
P x K = 32 x 2, SGD, warm-up + cosine) on ``celeba_train`` for ``--epochs`` from the same seed,
is exported to ONNX (``facegallery export``, parity-checked) and is then measured *as served*:
the real pipeline with the file as its recognizer (flip-averaged, as every model here), on
``celeba_150`` and ``att_orl``, people it never saw (the evaluation guard checks): 10-fold
accuracy and TAR@FAR=1e-2 (``eval pairs``), rank-1 (``eval identify``, one photo enrolled per
person, the others searched). The pretrained SFace runs the same protocol in the same run,
and so does SFace fine-tuned with ArcFace on celeba_train (``--init sface``, a lower learning
rate: fine-tuning must not undo what the weights know).

Each exported model's threshold is calibrated at FAR 1e-3 on its run's own validation pairs
(held-out celeba_train people) so ``eval identify`` can run; rank-1 does not depend on it.
The plot shows a few celeba_150 people's embeddings per loss, projected onto their first two
principal components (the models are 128-d; the papers' 2-D figures train 2-D features).

    .venv/bin/python benchmarks/bench_losses.py --epochs 5 \\
        --json benchmarks/results/losses.json --plot benchmarks/results/losses.png

Run directories (checkpoints, metrics, loss/ROC plots) go to ``--runs``; a run already there
is resumed, not repeated.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from facegallery.core.config import Settings, load_settings
from facegallery.decisions.thresholds import Thresholds, calibrate
from facegallery.evaluation.identify import evaluate_identification
from facegallery.evaluation.pairs import read_pairs
from facegallery.evaluation.runner import evaluate_pairs
from facegallery.training.data import (
    guard_evaluation,
    identity_photos,
)
from facegallery.training.export import export
from facegallery.training.losses import LOSSES
from facegallery.training.trainer import RunConfig, held_out_people, train
from facegallery.training.validation import cosines, validation_pairs
from facegallery.vision.pipeline import FacePipeline
from report import FACES, emit

EVAL_SETS = ("celeba_150", "att_orl")
PLOT_PEOPLE = 6


def measure(pipeline: FacePipeline, settings: Settings) -> dict[str, Any]:
    """The pairs and identification protocols on both evaluation sets."""
    out: dict[str, Any] = {}
    for name in EVAL_SETS:
        root = FACES / name
        guard_evaluation(settings.models.recognizer_onnx, root)
        pairs, _ = evaluate_pairs(pipeline, root, read_pairs(root / "pairs.csv"), progress=False)
        ident = evaluate_identification(
            pipeline, root, 1, 2, settings.matching, settings.gallery.fusion, progress=False
        )
        out[name] = {
            "accuracy": pairs["accuracy_mean"],
            "accuracy_std": pairs["accuracy_std"],
            "tar_at_far_1e-2": pairs["tar_at_far"].get("0.01"),
            "auc": pairs["auc"],
            "rank1": ident["rank1"],
            "failed_pairs": pairs["failed_pairs"],
        }
    return out


def calibrate_on_validation(pipeline: FacePipeline, settings: Settings, run_dir: Path) -> None:
    """FAR 1e-3 threshold from the run's held-out celeba_train people, served embeddings."""
    config = RunConfig.read(run_dir)
    people = held_out_people(config, pipeline, settings.training.cache_dir)
    pairs = validation_pairs(people.labels, config.validation_impostors, config.seed)
    scores = cosines(pipeline.embedder.embed(people.crops), pairs)
    calibration = calibrate(scores, pairs.same, 1e-3, pipeline.model_id, "celeba_train val")
    Thresholds(settings.matching).save(calibration)


def plot_points(pipeline: FacePipeline) -> dict[str, np.ndarray]:
    """Unit embeddings of the celeba_150 people with the most photos, by person."""
    photos = identity_photos(FACES / "celeba_150")
    by_person: dict[str, list[Path]] = {}
    for person, photo in photos:
        by_person.setdefault(person, []).append(photo)
    chosen = sorted(by_person, key=lambda p: (-len(by_person[p]), p))[:PLOT_PEOPLE]
    points = {}
    for person in chosen:
        faces = [pipeline.analyze(p.read_bytes()) for p in by_person[person]]
        vectors = [f[0].embedding for f in faces if f and f[0].embedding is not None]
        points[person] = np.stack(vectors)
    return points


def plot(all_points: dict[str, dict[str, np.ndarray]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 3
    rows = -(-len(all_points) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.2 * rows), dpi=110)
    for ax, (model, points) in zip(axes.flat, all_points.items(), strict=False):
        stacked = np.concatenate(list(points.values()))
        centred = stacked - stacked.mean(axis=0)
        _, _, basis = np.linalg.svd(centred, full_matrices=False)
        for index, vectors in enumerate(points.values()):
            xy = (vectors - stacked.mean(axis=0)) @ basis[:2].T
            ax.scatter(xy[:, 0], xy[:, 1], s=14, color=f"C{index}")
        ax.set_title(model, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(all_points) :]:
        ax.axis("off")
    fig.suptitle(f"{PLOT_PEOPLE} celeba_150 people (colours), first 2 principal components")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def trained_model(
    loss: str, init: str, epochs: int, seed: int, run_dir: Path, settings: Settings
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Train (or resume), export, calibrate and measure one run, as served."""
    summary = train(
        FACES / "celeba_train",
        loss,
        epochs,
        seed,
        run_dir,
        settings,
        resume=run_dir.exists(),
        init=init,
    )
    onnx_path = run_dir / f"{run_dir.name}.onnx"
    exported = export(run_dir, onnx_path, settings)
    served = settings.model_copy(deep=True)
    served.models.recognizer_onnx = onnx_path
    served.models.recognizer_family = "arcface"
    pipeline = FacePipeline.from_settings(served)
    calibrate_on_validation(pipeline, served, run_dir)
    rows = summary_rows(run_dir)
    result = {
        "model_id": pipeline.model_id,
        "init": init,
        "epochs": epochs,
        "learning_rate": settings.training.learning_rate,
        "train_seconds": round(sum(r.get("seconds", 0.0) for r in rows), 1),
        "images_per_second": round(
            float(np.mean([r["images_per_second"] for r in rows if "loss" in r])), 1
        ),
        "validation_untrained": summary["untrained"],
        "validation_final": summary["final"],
        "parity_min_cosine": exported["parity_min_cosine"],
        **measure(pipeline, served),
    }
    print(run_dir.name, result, flush=True)
    return result, plot_points(pipeline)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--losses", nargs="*", default=list(LOSSES), choices=LOSSES)
    parser.add_argument(
        "--finetune-epochs", type=int, default=1, help="SFace fine-tuned with ArcFace (0: skip)"
    )
    parser.add_argument("--finetune-lr", type=float, default=0.005)
    parser.add_argument(
        "--finetune-frozen-epochs", type=int, default=0, help="head-only epochs first"
    )
    parser.add_argument(
        "--finetune-imprint",
        action="store_true",
        help="start the ArcFace head at each person's mean SFace embedding",
    )
    parser.add_argument("--runs", type=Path, default=Path("benchmarks/runs"))
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    parser.add_argument("--plot", type=Path, help="embedding plot (PNG)")
    args = parser.parse_args()
    base = load_settings()
    results: dict[str, Any] = {}
    points: dict[str, dict[str, np.ndarray]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        base.matching.thresholds_file = Path(scratch) / "thresholds.json"
        sface = FacePipeline.from_settings(base)
        results["sface (pretrained)"] = {"model_id": sface.model_id, **measure(sface, base)}
        points["sface (pretrained)"] = plot_points(sface)
        for loss in args.losses:
            results[loss], points[loss] = trained_model(
                loss, "scratch", args.epochs, args.seed, args.runs / loss, base
            )
        if args.finetune_epochs:
            tuning = base.model_copy(deep=True)
            tuning.training.learning_rate = args.finetune_lr
            frozen = tuning.training.frozen_backbone_epochs = args.finetune_frozen_epochs
            imprint = tuning.training.imprint_head = args.finetune_imprint
            name = "sface + arcface fine-tune" + (", head imprinted" if imprint else "")
            name += f", head alone {frozen} epoch" if frozen else ""
            run_dir = args.runs / (
                f"sface-arcface{'-imprint' if imprint else ''}-frozen{frozen}"
                f"-e{args.finetune_epochs}"
            )
            results[name], points[name] = trained_model(
                "arcface", "sface", args.finetune_epochs, args.seed, run_dir, tuning
            )
    run = {
        "epochs": args.epochs,
        "seed": args.seed,
        "recipe": base.training.model_dump(mode="json", exclude={"cache_dir"}),
        "training_set": "celeba_train",
        "identify_protocol": "1 photo enrolled per person (2+), the others searched",
    }
    if args.plot is not None:
        plot(points, args.plot)
    emit({"run": run, "models": results}, args.json)


def summary_rows(run_dir: Path) -> list[dict[str, float]]:
    """The run's metrics, one row per epoch (epoch 0: untrained, no training time)."""
    rows: list[dict[str, float]] = json.loads((run_dir / "metrics.json").read_text())
    return rows


if __name__ == "__main__":
    main()
