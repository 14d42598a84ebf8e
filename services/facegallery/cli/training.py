"""The ``facegallery train`` and ``facegallery export`` commands (registered by ``cli.py``).

torch is imported only when one of them runs: the serving image does not need it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, get_args

import typer

from facegallery.cli.common import ConfigOption, emit_json, reports_errors
from facegallery.core.config import LossName, load_settings

LOSS_HELP = "The loss: " + ", ".join(get_args(LossName)) + "."


def _require_torch() -> None:
    """A clear instruction instead of an ImportError where the train extra is missing."""
    from importlib.util import find_spec

    from facegallery.core.errors import FailedPrecondition

    if find_spec("torch") is None:
        raise FailedPrecondition("training needs torch: pip install 'facegallery[train]'")


@reports_errors
def train_command(
    data: Annotated[
        Path, typer.Option("--data", help="Training photos, one sub-folder per person.")
    ],
    loss: Annotated[str, typer.Option("--loss", help=LOSS_HELP)],
    out: Annotated[Path, typer.Option("--out", help="Run directory (checkpoints, metrics).")],
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the identities.")] = 10,
    seed: Annotated[int, typer.Option("--seed", help="Seeds split, sampling, weights.")] = 0,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from its checkpoint.")
    ] = False,
    init: Annotated[
        str,
        typer.Option(
            "--init", help="Initial weights: scratch (an IResNet) or sface (fine-tune SFace)."
        ),
    ] = "scratch",
    config: ConfigOption = None,
) -> None:
    """Train an embedding model with a metric-learning loss on photos aligned by the
    configured detector, validating on held-out people each epoch (summary JSON on stdout)."""
    _require_torch()
    from facegallery.training.trainer import train

    settings = load_settings(config)
    emit_json(train(data, loss, epochs, seed, out, settings, resume, init=init), None)


@reports_errors
def export_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory made by facegallery train.")],
    onnx_out: Annotated[Path, typer.Option("--onnx", help="Where to write the ONNX model.")],
    config: ConfigOption = None,
) -> None:
    """Export a run's checkpoint to ONNX (checked against torch on held-out crops); serve it
    with models.recognizer_onnx and models.recognizer_family arcface."""
    _require_torch()
    from facegallery.training.export import export

    emit_json(export(run_dir, onnx_out, load_settings(config)), None)
