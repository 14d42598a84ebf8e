"""Research commands: detection on one photo, accuracy with the field's protocols (10-fold,
TAR@FAR, rank-1, FNIR@FPIR), pair calibration of the 1:1 threshold, and metric learning
(train, export)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from facegallery.cli.common import (
    ConfigOption,
    FpirOption,
    JsonFlag,
    emit_json,
    read_image,
    reports_errors,
)
from facegallery.cli.training import export_command, train_command
from facegallery.core.config import Settings, load_settings
from facegallery.core.errors import InvalidInput

if TYPE_CHECKING:
    from facegallery.evaluation.pairs import Pair
    from facegallery.vision.pipeline import FacePipeline

app = typer.Typer()
eval_app = typer.Typer(help="Measure accuracy with the field's protocols.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")
app.command("train")(train_command)
app.command("export")(export_command)

RootOption = Annotated[Path, typer.Option("--root", help="Folder the pair paths are relative to.")]
PairsOption = Annotated[
    Path, typer.Option("--pairs", help="CSV img_a,img_b,same[,fold] or LFW pairs.txt.")
]
PackOption = Annotated[
    str | None, typer.Option("--model-pack", help="Model pack to use (default: configured).")
]


def _settings(config: Path | None, pack: str | None = None) -> Settings:
    settings = load_settings(config)
    if pack is not None:
        settings.models.pack = pack
    return settings


@app.command("detect")
@reports_errors
def detect(
    image: Annotated[Path, typer.Argument(help="JPEG, PNG or WebP file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    config: ConfigOption = None,
    model_pack: PackOption = None,
) -> None:
    """Faces in an image: boxes, landmarks, quality and why a face would be rejected."""
    from facegallery.vision.pipeline import FacePipeline

    data = read_image(image)
    pipeline = FacePipeline.from_settings(_settings(config, model_pack))
    faces = pipeline.analyze(data)
    if as_json:
        emit_json({"image": str(image), "faces": [f.to_dict() for f in faces]}, None)
        return
    typer.echo(f"{image}: {len(faces)} face(s)")
    for i, face in enumerate(faces, start=1):
        x1, y1, x2, y2 = (round(float(v)) for v in face.detection.box)
        typer.echo(
            f"  {i}. box ({x1},{y1})-({x2},{y2}) score {face.detection.score:.2f} "
            f"quality {face.quality.score:.2f} {face.quality.verdict}"
        )


def _labelled_pairs(
    root: Path, pairs: Path, settings: Settings
) -> tuple[Settings, list[Pair], FacePipeline]:
    """What `eval pairs` and `calibrate` both start from: the settings, the pairs, and the
    pipeline, once the set is known not to overlap the model's training data (a threshold
    fitted, or an accuracy measured, on it would be as optimistic as memory)."""
    from facegallery.evaluation.pairs import read_pairs
    from facegallery.training.data import guard_evaluation
    from facegallery.vision.pipeline import FacePipeline

    if not root.is_dir():
        raise InvalidInput(f"--root {root} is not a folder")
    guard_evaluation(settings.models.recognizer_onnx, root)
    return settings, read_pairs(pairs), FacePipeline.from_settings(settings)


@eval_app.command("pairs")
@reports_errors
def eval_pairs(
    root: RootOption,
    pairs: PairsOption,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write JSON here.")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Save the ROC curve here.")] = None,
    config: ConfigOption = None,
    model_pack: PackOption = None,
) -> None:
    """10-fold verification accuracy, AUC and TAR@FAR on image pairs (largest face each)."""
    from facegallery.evaluation.runner import evaluate_pairs, plot_roc

    _, pair_list, pipeline = _labelled_pairs(root, pairs, _settings(config, model_pack))
    report, scores = evaluate_pairs(pipeline, root, pair_list, progress=True)
    if plot is not None:
        plot_roc(scores, plot, pipeline.model_id)
    emit_json(report, json_out)


@eval_app.command("precision-gate")
@reports_errors
def eval_precision_gate(
    root: RootOption,
    pairs: PairsOption,
    precision: Annotated[
        str, typer.Option("--precision", help="The reduced precision to judge: bf16.")
    ] = "bf16",
    stage: Annotated[
        Literal["recognizer", "detector"],
        typer.Option("--model", help="Which of the pack's models to judge."),
    ] = "recognizer",
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the JSON here, not stdout.")
    ] = None,
    config: ConfigOption = None,
    model_pack: PackOption = None,
) -> None:
    """Whether a model at a reduced precision may stand in for fp32 (ONNX Runtime) under the
    same model id: at fp32's thresholds, pairs scored across precisions (either side
    reduced) and both reduced must keep 10-fold accuracy and TAR@FAR 1e-3 within 0.1 point,
    FAR may not rise more, and each face's output may move only so far (a recognizer's
    embedding, a detector's landmarks: evaluation.precision_gate). A detector is judged end
    to end, its crops embedded by the fp32 recognizer. Judged without flip averaging (it
    would average part of the error away). The verdict is kept for `runtime.backend: auto`
    (a passing precision becomes one of its candidates); exit 1 when refused."""
    from facegallery.evaluation.precision_gate import (
        Faces,
        MovedOnePixel,
        face_crops,
        pair_faces,
        run_detector_gate,
        run_gate,
    )
    from facegallery.models import ModelStore
    from facegallery.runtime.gates import REDUCED, write_gate
    from facegallery.runtime.onnx import OnnxRuntime
    from facegallery.runtime.openvino import OpenVinoRuntime
    from facegallery.vision.embed import Embedder
    from facegallery.vision.pipeline import FaceFinder

    if precision not in REDUCED:
        raise InvalidInput(f"--precision {precision}: one of {', '.join(REDUCED)}")
    settings = _settings(config, model_pack)
    settings.embed.flip_tta = False
    settings, pair_list, pipeline = _labelled_pairs(root, pairs, settings)
    detector, recognizer = ModelStore(settings.models).load_configured()
    if not isinstance(pipeline.embedder, Embedder):
        raise InvalidInput(
            f"the precision gate runs on a pack with one recognizer; pack "
            f"{settings.models.pack!r} fuses two (judge its models under the default pack)"
        )
    # The reference is fp32 on ONNX Runtime for both models, whatever auto picked here.
    embedder = pipeline.embedder.on_runtime(OnnxRuntime(recognizer.path, settings.runtime))
    found_by = pipeline.detector.on_runtime(OnnxRuntime(detector.path, settings.runtime))

    def faces_on(finder: FaceFinder) -> Faces:
        return pair_faces(finder, root, pair_list)

    if stage == "recognizer":
        model = recognizer
        reduced = embedder.on_runtime(OpenVinoRuntime(model.path, settings.runtime, precision))
        crops = face_crops(FaceFinder(found_by, settings), root, pair_list)
        verdict = run_gate(crops, pair_list, embedder, reduced, precision, root.name)
    else:
        model = detector
        low = found_by.on_runtime(OpenVinoRuntime(model.path, settings.runtime, precision))
        verdict = run_detector_gate(
            faces_on(FaceFinder(found_by, settings)),
            faces_on(FaceFinder(low, settings)),
            faces_on(MovedOnePixel(found_by, settings)),
            pair_list,
            embedder,
            model.model_id,
            precision,
            root.name,
        )
    write_gate(model, verdict, settings.runtime)
    emit_json(asdict(verdict), json_out)
    if not verdict.passed:
        raise typer.Exit(1)


@app.command("calibrate")
@reports_errors
def calibrate(
    root: RootOption,
    pairs: PairsOption,
    far: Annotated[float, typer.Option("--far", help="Target false accept rate.")] = 0.001,
    as_json: JsonFlag = False,
    config: ConfigOption = None,
    model_pack: PackOption = None,
) -> None:
    """Choose the threshold for a target FAR on labelled pairs and store it for the model."""
    from facegallery.decisions.thresholds import Thresholds
    from facegallery.decisions.thresholds import calibrate as fit
    from facegallery.evaluation.runner import largest_face_embedder, score_pairs

    settings, pair_list, pipeline = _labelled_pairs(root, pairs, _settings(config, model_pack))
    scores = score_pairs(root, pair_list, largest_face_embedder(pipeline), progress=True)
    result = fit(scores.scores, scores.same, far, pipeline.model_id, f"{root.name}/{pairs.name}")
    thresholds = Thresholds(settings.matching)
    thresholds.save(result)
    if as_json:
        emit_json(asdict(result), None)
        return
    typer.echo(
        f"threshold {result.threshold:.4f} for {result.model_id}: FAR {result.far:.5f} "
        f"(target {far}), TAR {result.tar:.4f} on {result.genuine_pairs} genuine / "
        f"{result.impostor_pairs} impostor pairs; saved to {thresholds.path}"
    )


@eval_app.command("identify")
@reports_errors
def eval_identify(
    root: Annotated[Path, typer.Option("--root", help="Folder with one sub-folder per person.")],
    enroll_per_identity: Annotated[
        int, typer.Option("--enroll-per-identity", help="K: photos enrolled per person.")
    ] = 1,
    min_images: Annotated[
        int | None,
        typer.Option("--min-images", help="N: people with fewer are not enrolled (default K+1)."),
    ] = None,
    distractors: Annotated[
        Path | None,
        typer.Option(
            "--distractors",
            help="Folder-per-identity people enrolled as extra users (K photos each), never "
            "searched: a bigger gallery.",
        ),
    ] = None,
    fpir: FpirOption = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write JSON here.")] = None,
    config: ConfigOption = None,
    model_pack: PackOption = None,
) -> None:
    """Rank-1, rank-5, FNIR@FPIR and the product's operating point (measured FPIR and FNIR
    at the threshold identify would use) with the real gallery (a temporary one)."""
    from facegallery.evaluation.identify import evaluate_identification
    from facegallery.training.data import guard_evaluation
    from facegallery.vision.pipeline import FacePipeline

    settings = _settings(config, model_pack)
    guard_evaluation(settings.models.recognizer_onnx, root, *filter(None, [distractors]))
    pipeline = FacePipeline.from_settings(settings)
    minimum = min_images if min_images is not None else enroll_per_identity + 1
    report = evaluate_identification(
        pipeline,
        root,
        enroll_per_identity,
        minimum,
        settings.matching,
        settings.gallery.fusion,
        distractors,
        fpir,
    )
    emit_json(report, json_out)
