"""``facegallery train``: one metric-learning run in a run directory, resumable and seeded.

A run directory holds everything needed to continue, reproduce or serve the run:
``config.json`` (data, loss, seed, epochs, the recipe and the detector that made the crops),
``checkpoint.pt`` (model, loss module, optimizer, schedule and every random state, written
atomically after each epoch), ``training-data.json`` (the identities and photo hashes trained
on, for the evaluation guard), ``metrics.csv`` / ``metrics.json`` (one row per epoch, epoch 0
being the untrained model) and the plots ``loss.png`` and ``roc.png``.

The schedule: SGD with momentum, one epoch of linear warm-up (the margin losses diverge
without it from random weights), then cosine decay to zero at the last epoch. With the same
seed, data and thread count a run is bit-for-bit repeatable, and a resumed run continues
exactly where the interrupted one stopped (the test checks both).
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from facegallery.core.config import Settings
from facegallery.core.errors import FailedPrecondition, InvalidInput
from facegallery.evaluation.runner import PairScores, plot_roc
from facegallery.models import ModelStore
from facegallery.models.specs import SFACE_2021DEC
from facegallery.training.augment import augment
from facegallery.training.data import (
    AlignedSet,
    PKSampler,
    TrainingManifest,
    load_aligned,
    split_by_identity,
)
from facegallery.training.losses import (
    HEADLESS,
    IMPRINTABLE,
    LOSSES,
    CosineClassifier,
    build_loss,
)
from facegallery.training.model import IResNet, preprocess
from facegallery.training.sface import SFACE_DIM, convert_sface, sface_modules
from facegallery.training.validation import (
    embed_crops,
    pair_scores,
    validation_metrics,
    validation_pairs,
)
from facegallery.vision.pipeline import FaceFinder, build_detector

CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"
MANIFEST = "training-data.json"
MOMENTUM = 0.9
INITS = ("scratch", "sface")
PARITY_CROPS = 64


@dataclass(frozen=True)
class RunConfig:
    """What defines a run: resuming with anything different would be another run."""

    data: str
    loss: str
    epochs: int
    seed: int
    detector_id: str
    identities_per_batch: int
    images_per_identity: int
    embedding_dim: int
    width: int
    learning_rate: float
    weight_decay: float
    validation_fraction: float
    validation_impostors: int
    # Defaults: what runs made before these options existed did.
    frozen_backbone_epochs: int = 0
    init: str = "scratch"
    imprint_head: bool = False

    @classmethod
    def read(cls, run_dir: Path) -> RunConfig:
        path = run_dir / CONFIG
        if not path.is_file():
            raise InvalidInput(f"{run_dir} is not a training run (no {CONFIG})")
        return cls(**json.loads(path.read_text()))


def held_out_people(config: RunConfig, finder: FaceFinder, cache_dir: Path) -> AlignedSet:
    """The run's validation people (its seeded split of its data), from the aligned cache."""
    data = load_aligned(Path(config.data), finder, cache_dir, progress=False)
    _, validation = split_by_identity(data, config.validation_fraction, config.seed)
    return data.subset(validation)


def build_model(
    config: RunConfig, settings: Settings, parity_crops: np.ndarray | None = None
) -> nn.Module:
    """The run's network: a fresh IResNet, or SFace's pretrained weights converted to torch
    (checked against ONNX Runtime on ``parity_crops`` when given: at the start of a run)."""
    if config.init == "scratch":
        return IResNet(config.embedding_dim, config.width)
    path = ModelStore(settings.models).load(SFACE_2021DEC).path
    if parity_crops is None:
        return sface_modules(path)
    return convert_sface(path, parity_crops)


@dataclass
class Run:
    """The live objects of a run, as saved in and restored from a checkpoint."""

    model: nn.Module
    loss: nn.Module
    optimizer: torch.optim.SGD
    schedule: torch.optim.lr_scheduler.LambdaLR
    sampler: PKSampler
    generator: torch.Generator
    epoch: int
    metrics: list[dict[str, float]]

    def state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "loss": self.loss.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "sampler": self.sampler.state(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "epoch": self.epoch,
            "metrics": self.metrics,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.loss.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.sampler.restore(state["sampler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.epoch = state["epoch"]
        self.metrics = state["metrics"]


def face_finder(settings: Settings) -> FaceFinder:
    """The configured detector and alignment: the crops the served Embedder will see."""
    detector_model, _ = ModelStore(settings.models).load_configured()
    return FaceFinder(build_detector(detector_model, settings), settings)


def train(
    data_root: Path,
    loss: str,
    epochs: int,
    seed: int,
    run_dir: Path,
    settings: Settings,
    resume: bool = False,
    progress: bool = True,
    init: str = "scratch",
) -> dict[str, Any]:
    """Train (or resume) the run in ``run_dir``; returns its summary (JSON-ready)."""
    if loss not in LOSSES:
        raise InvalidInput(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    if epochs < 1:
        raise InvalidInput("--epochs must be at least 1")
    if init not in INITS:
        raise InvalidInput(f"unknown --init {init!r}; choose one of {', '.join(INITS)}")
    if settings.training.frozen_backbone_epochs and loss in HEADLESS:
        raise InvalidInput(
            f"training.frozen_backbone_epochs: the {loss} loss has no head to train alone"
        )
    if settings.training.imprint_head and loss not in IMPRINTABLE:
        raise InvalidInput(
            f"training.imprint_head: the {loss} loss has no cosine classifier to imprint "
            f"({', '.join(IMPRINTABLE)} have)"
        )
    recipe = settings.training
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    finder = face_finder(settings)
    config = RunConfig(
        data=str(data_root.resolve()),
        loss=loss,
        epochs=epochs,
        seed=seed,
        detector_id=finder.detector_id,
        **recipe.model_dump(exclude={"cache_dir", "threads"}),
        init=init,
    )
    if init == "sface":  # SFace's own embedding size and architecture
        config = replace(config, embedding_dim=SFACE_DIM, width=0)
    _claim(run_dir, config, resume)
    data = load_aligned(data_root, finder, recipe.cache_dir, progress)
    training_ids, validation_ids = split_by_identity(data, config.validation_fraction, seed)
    train_set, val_set = data.subset(training_ids), data.subset(validation_ids)
    TrainingManifest.of(train_set).write(run_dir / MANIFEST)
    pairs = validation_pairs(val_set.labels, config.validation_impostors, seed)
    checkpoint = run_dir / CHECKPOINT
    run = _new_run(config, train_set, settings, resuming=checkpoint.exists())
    if checkpoint.exists():
        run.restore(torch.load(checkpoint, weights_only=False))
    scores = pair_scores(run.model, val_set, pairs)
    if not checkpoint.exists():
        run.metrics.append({"epoch": 0, **validation_metrics(scores, pairs)})
    started = time.perf_counter()
    while run.epoch < epochs:
        row = _train_epoch(run, train_set, config.frozen_backbone_epochs, progress)
        scores = pair_scores(run.model, val_set, pairs)
        row.update(validation_metrics(scores, pairs))
        run.metrics.append(row)
        _save(run, run_dir)
    roc = PairScores(scores, pairs.same, pairs.folds, len(val_set.labels))
    _plot(run_dir, run.metrics, roc, config)
    return {
        "run_dir": str(run_dir),
        "loss": loss,
        "epochs": epochs,
        "train_identities": len(train_set.names),
        "train_images": len(train_set.labels),
        "validation_identities": len(val_set.names),
        "validation_pairs": len(pairs.same),
        "photos_without_face": len(data.missed),
        "untrained": run.metrics[0],
        "final": run.metrics[-1],
        "seconds_this_call": round(time.perf_counter() - started, 2),
    }


def _claim(run_dir: Path, config: RunConfig, resume: bool) -> None:
    """Make ``run_dir`` this run's, or check that it already is when resuming."""
    if (run_dir / CONFIG).exists():
        if not resume:
            raise InvalidInput(
                f"{run_dir} already holds a run: pass --resume to continue it, or choose "
                "another --out"
            )
        previous = RunConfig.read(run_dir)
        if previous != config:
            changed = [k for k, v in asdict(config).items() if asdict(previous)[k] != v]
            raise InvalidInput(
                f"--resume: {run_dir} was started with different {', '.join(changed)}; "
                "resume it with the same options or start another run"
            )
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG).write_text(json.dumps(asdict(config), indent=2) + "\n")


def _new_run(config: RunConfig, train_set: AlignedSet, settings: Settings, resuming: bool) -> Run:
    torch.manual_seed(config.seed)
    model = build_model(config, settings, None if resuming else train_set.crops[:PARITY_CROPS])
    loss = build_loss(config.loss, config.embedding_dim, len(train_set.names))
    if config.imprint_head and not resuming and isinstance(loss, CosineClassifier):
        loss.imprint(_class_means(model, train_set))
    optimizer = torch.optim.SGD(
        [*model.parameters(), *loss.parameters()],
        lr=config.learning_rate,
        momentum=MOMENTUM,
        weight_decay=config.weight_decay,
    )
    sampler = PKSampler(
        train_set.labels, config.identities_per_batch, config.images_per_identity, config.seed
    )
    generator = torch.Generator().manual_seed(config.seed + 1)
    schedule = _schedule(optimizer, config, len(sampler))
    return Run(model, loss, optimizer, schedule, sampler, generator, 0, [])


def _class_means(model: nn.Module, data: AlignedSet) -> torch.Tensor:
    """The direction of each training person's mean unit embedding under ``model``, by
    label (their sum: ``imprint`` normalises it)."""
    vectors = torch.from_numpy(embed_crops(model, data.crops))
    labels = torch.from_numpy(data.labels).long()
    return torch.zeros(len(data.names), vectors.shape[1]).index_add_(0, labels, vectors)


def _schedule(
    optimizer: torch.optim.SGD, config: RunConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """One epoch of linear warm-up, then cosine decay to zero at the last step."""
    total = config.epochs * steps_per_epoch
    warmup = steps_per_epoch if config.epochs > 1 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _train_epoch(
    run: Run, data: AlignedSet, frozen_epochs: int, progress: bool
) -> dict[str, float]:
    """One epoch; in the first ``frozen_epochs`` only the loss's head learns (the backbone in
    eval mode, so its BatchNorm statistics stay too)."""
    frozen = run.epoch < frozen_epochs
    run.model.train(not frozen)
    run.model.requires_grad_(not frozen)
    run.loss.train()
    losses = []
    started = time.perf_counter()
    batches = list(run.sampler.epoch())
    for indices in tqdm(batches, desc=f"epoch {run.epoch + 1}", unit="batch", disable=not progress):
        inputs = augment(preprocess(data.crops[indices]), run.generator)
        with torch.set_grad_enabled(not frozen):
            embeddings = run.model(inputs)
        value = run.loss(embeddings, torch.from_numpy(data.labels[indices]))
        if not torch.isfinite(value):
            raise FailedPrecondition(
                f"the loss diverged (it is {float(value)}) at epoch {run.epoch + 1}: lower "
                "training.learning_rate and start another run"
            )
        run.optimizer.zero_grad(set_to_none=True)
        value.backward()
        run.optimizer.step()
        run.schedule.step()
        losses.append(float(value.detach()))
    seconds = time.perf_counter() - started
    run.epoch += 1
    return {
        "epoch": run.epoch,
        "loss": float(np.mean(losses)),
        "learning_rate": run.optimizer.param_groups[0]["lr"],
        "seconds": round(seconds, 2),
        "images_per_second": round(len(batches) * len(batches[0]) / seconds, 1),
        "backbone_frozen": float(frozen),
    }


def _save(run: Run, run_dir: Path) -> None:
    """Checkpoint and metrics, each written whole or not at all."""
    partial = run_dir / (CHECKPOINT + ".part")
    torch.save(run.state(), partial)
    partial.replace(run_dir / CHECKPOINT)
    (run_dir / "metrics.json").write_text(json.dumps(run.metrics, indent=2) + "\n")
    columns = sorted({key for row in run.metrics for key in row}, key=_column_order)
    with (run_dir / "metrics.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(run.metrics)


def _column_order(name: str) -> tuple[int, str]:
    first = ["epoch", "loss", "val_accuracy", "val_auc", "val_tar_at_far_1e-2"]
    return (first.index(name) if name in first else len(first), name)


def _plot(
    run_dir: Path, metrics: list[dict[str, float]], roc: PairScores, config: RunConfig
) -> None:
    """``loss.png`` (training loss and validation accuracy per epoch) and ``roc.png`` (the
    last model's validation scores)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trained = [row for row in metrics if "loss" in row]
    fig, left = plt.subplots(figsize=(5, 4), dpi=120)
    left.plot([r["epoch"] for r in trained], [r["loss"] for r in trained], "o-", label="loss")
    left.set_xlabel("epoch")
    left.set_ylabel(f"training loss ({config.loss})")
    right = left.twinx()
    right.plot(
        [r["epoch"] for r in metrics], [r["val_accuracy"] for r in metrics], "s--", color="C1"
    )
    right.set_ylabel("validation accuracy (10-fold)", color="C1")
    fig.tight_layout()
    fig.savefig(run_dir / "loss.png")
    plt.close(fig)
    plot_roc(roc, run_dir / "roc.png", f"{config.loss}, epoch {metrics[-1]['epoch']}")
