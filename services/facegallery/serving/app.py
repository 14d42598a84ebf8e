"""The Ray Serve application, built from the settings tree, and its Serve config file.

``build`` is the application's import path (``facegallery.serving.app:build``): `serve run` /
`serve deploy` of the YAML that ``serve_config`` renders call it with the settings as
``args``, and every deployment's replicas, limits, resources and batching come from
``serving.*`` (the YAML repeats them for operators to read and override, and is the file the
Helm chart renders)."""

from __future__ import annotations

import os
from typing import Any

from ray import serve
from ray.serve import Application
from ray.serve.config import BackpressureConfig

from facegallery.core.config import (
    METRICS_DIR_ENV,
    NODE_METRICS_DIR_ENV,
    DeploymentSettings,
    Settings,
)
from facegallery.serving import proxy
from facegallery.serving.deployments import DetectorDeployment, EmbedderDeployment
from facegallery.serving.gateway import GRPC_SERVICERS, Gateway
from facegallery.serving.workers import EnrollmentWorkers

IMPORT_PATH = "facegallery.serving.app:build"


def build(args: dict[str, Any]) -> Application:
    """The application graph: Gateway -> Detector, Embedder; enrollment workers beside."""
    settings = Settings(**args.get("settings", {}))
    shared = args.get("settings", {})
    serving = settings.serving
    detector = serve.deployment(name="Detector", **deployment_options(serving.detector, settings))(
        DetectorDeployment
    )
    embedder = serve.deployment(name="Embedder", **deployment_options(serving.embedder, settings))(
        EmbedderDeployment
    )
    workers = serve.deployment(**deployment_options(serving.workers, settings))(EnrollmentWorkers)
    gateway = serve.deployment(**deployment_options(serving.gateway, settings, True))(Gateway)
    detector_node, embedder_node = detector.bind(shared), embedder.bind(shared)
    app: Application = gateway.bind(
        shared, detector_node, embedder_node, workers.bind(shared, detector_node, embedder_node)
    )
    return app


def deployment_options(
    deployment: DeploymentSettings, settings: Settings, gateway: bool = False
) -> dict[str, Any]:
    """Serve's options for one deployment, from its settings."""
    options: dict[str, Any] = {
        "max_ongoing_requests": deployment.max_ongoing_requests,
        "max_queued_requests": deployment.max_queued_requests,
        "ray_actor_options": {
            "num_cpus": deployment.num_cpus,
            "num_gpus": deployment.num_gpus,
            "resources": deployment.resources,
            "runtime_env": {"env_vars": worker_env(settings)},
        },
    }
    if deployment.max_replicas_per_node is not None:
        options["max_replicas_per_node"] = deployment.max_replicas_per_node
    if deployment.num_replicas == "auto":
        options["autoscaling_config"] = {
            "min_replicas": deployment.min_replicas,
            "max_replicas": deployment.max_replicas,
            "target_ongoing_requests": deployment.target_ongoing_requests,
        }
    else:
        options["num_replicas"] = deployment.num_replicas
    if gateway:  # the proxy refuses past the gateway's queue: 429 with Retry-After
        options["backpressure_config"] = BackpressureConfig(
            status_code=429, retry_after_s=settings.serving.retry_after_s
        )
    return options


def required_cpus(settings: Settings) -> float:
    """Logical CPUs the application asks Ray for (each deployment at its replica floor)."""
    serving = settings.serving
    answering = (serving.gateway, serving.detector, serving.embedder)  # at least one each
    total = sum(d.num_cpus * max(d.replica_floor, 1) for d in answering)
    return total + serving.workers.num_cpus * serving.workers.replica_floor


def required_resources(settings: Settings) -> dict[str, float]:
    """Custom resources the application asks for (``serving.*.resources``, each deployment
    at its replica floor): what a local Ray of its own must offer, or they never start."""
    serving = settings.serving
    needed: dict[str, float] = {}
    for d in (serving.gateway, serving.detector, serving.embedder, serving.workers):
        for name, amount in d.resources.items():
            needed[name] = needed.get(name, 0.0) + amount * max(d.replica_floor, 1)
    return needed


def worker_env(settings: Settings) -> dict[str, str]:
    """Environment of every replica: prometheus_client's multiprocess directory, the node's
    (Ray expands ``${...}`` from the environment the raylet gives the worker), and the config
    file if any."""
    env = {METRICS_DIR_ENV: "${" + NODE_METRICS_DIR_ENV + "}"}
    if os.environ.get("FACEGALLERY_CONFIG"):
        env["FACEGALLERY_CONFIG"] = os.environ["FACEGALLERY_CONFIG"]
    return env


def ray_env(settings: Settings) -> dict[str, str]:
    """What Ray's own processes must find in their environment when Ray starts (Serve's
    proxies read it once): ``serving.max_request_bytes`` as the gRPC proxy's maximum message
    size (a larger message is RESOURCE_EXHAUSTED before it is buffered), the HTTP proxy's
    body bound (`facegallery.serving.proxy`), which reads the same variable, the
    ``serving`` section for the proxies' admission (`facegallery.serving.door`), and the
    node's metrics directory, where every Ray worker of the node (proxies, replicas) writes
    and the node's exporter reads: a node's own, not the application's, so that each node
    exports its own processes (on one machine, each node of a cluster is given another);
    on the head, how soon a silent node is declared dead (``serving.node_loss_detection_s``:
    Ray's GCS health checks, once a second)."""
    return {
        "RAY_health_check_period_ms": "1000",
        "RAY_health_check_timeout_ms": "1000",
        "RAY_health_check_failure_threshold": str(settings.serving.node_loss_detection_s),
        NODE_METRICS_DIR_ENV: str(settings.serving.metrics_dir),
        proxy.MAX_BYTES_ENV: str(settings.serving.max_request_bytes),
        proxy.CALLBACK_ENV: proxy.CALLBACK,
        proxy.SERVING_ENV: settings.serving.model_dump_json(),
    }


def serve_config(settings: Settings, overrides: dict[str, Any]) -> dict[str, Any]:
    """The Serve config file (``serve deploy`` / the KubeRay RayService ``serveConfigV2``).
    ``overrides``: the settings the application is built with (defaults omitted)."""
    serving = settings.serving
    deployments = []
    for name, deployment in [
        ("Gateway", serving.gateway),
        ("Detector", serving.detector),
        ("Embedder", serving.embedder),
        ("EnrollmentWorkers", serving.workers),
    ]:
        options = deployment_options(deployment, settings, gateway=name == "Gateway")
        if "backpressure_config" in options:
            options["backpressure_config"] = options["backpressure_config"].model_dump()
        deployments.append({"name": name, **options})
    return {
        "proxy_location": serving.proxy_location,
        "http_options": {"host": serving.host, "port": serving.http_port},
        "grpc_options": {"port": serving.grpc_port, "grpc_servicer_functions": GRPC_SERVICERS},
        "applications": [
            {
                "name": serving.app_name,
                "route_prefix": "/",
                "import_path": IMPORT_PATH,
                "args": {"settings": overrides},
                "deployments": deployments,
            }
        ],
    }


def run_app(settings: Settings, overrides: dict[str, Any], fresh_ray: bool = True) -> None:
    """Start Serve's proxies on this (already started) Ray and deploy the application; returns
    once every replica is healthy. On a Ray it started itself (``fresh_ray``) the metrics
    files of an earlier run are removed first; on a running cluster they may be live."""
    from ray.serve.config import HTTPOptions, gRPCOptions

    metrics_dir = settings.serving.metrics_dir
    metrics_dir.mkdir(parents=True, exist_ok=True)
    for stale in metrics_dir.glob("*.db") if fresh_ray else []:
        stale.unlink()
    serving = settings.serving
    serve.start(
        proxy_location=serving.proxy_location,
        http_options=HTTPOptions(host=serving.host, port=serving.http_port),
        grpc_options=gRPCOptions(port=serving.grpc_port, grpc_servicer_functions=GRPC_SERVICERS),
    )
    serve.run(build({"settings": overrides}), name=serving.app_name, route_prefix="/")
