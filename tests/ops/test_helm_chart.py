"""The Helm chart (``helm/facegallery``) checked by real tools, offline: ``helm lint --strict``
and ``helm template`` with every shipped values file, every core object validated by
kubernetes-validate, every custom resource against its CRD's schema (``../shared/crds``, objects
closed so that a misspelt field fails), the PrometheusRule through promtool, the serveConfigV2
equal to what ``facegallery serve config`` renders for the same settings, and bad values
refused with a message that names them."""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.ops.test_prometheus_rules import promtool
from tests.ops.tools import tool

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "facegallery"
VALUES = sorted((REPO / "helm" / "values").glob("*.yaml"))
CRDS = REPO.parent / "shared" / "crds"
KUBERNETES = "1.27.0"  # Chart.yaml's kubeVersion: the oldest release the chart is for
VALUE_SETS = [None, *VALUES]  # None: the chart's defaults
# Values no shipped file sets (custom resources, scale to zero, other ports), compared too.
EDGE_VALUES = Path(__file__).with_name("chart_values") / "edge.yaml"


def helm(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("helm"), *map(str, args)], capture_output=True, text=True, check=False
    )


def template(*args: str) -> tuple[dict[str, Any], ...]:
    """Every object ``helm template`` makes with these arguments (hooks included)."""
    done = helm("template", "fg", CHART, "--namespace", "faces", *args)
    assert done.returncode == 0, done.stderr
    return tuple(d for d in yaml.safe_load_all(done.stdout) if d)


@cache
def rendered(values: Path | None) -> tuple[dict[str, Any], ...]:
    return template("-f", str(values)) if values else template()


def without_facegallery_env() -> dict[str, str]:
    """This environment less the test session's FACEGALLERY_* settings: a process that
    reads only the file it is given."""
    return {k: v for k, v in os.environ.items() if not k.startswith("FACEGALLERY_")}


def one(objects: tuple[dict[str, Any], ...], kind: str, name: str = "") -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and name in o["metadata"]["name"]]
    assert len(found) == 1, f"{len(found)} {kind} named like {name!r}"
    return found[0]


def ray_containers(service: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = service["spec"]["rayClusterConfig"]
    templates = [cluster["headGroupSpec"]["template"]]
    templates += [g["template"] for g in cluster["workerGroupSpecs"]]
    return [t["spec"]["containers"][0] for t in templates]


def label(values: Path | None) -> str:
    return values.stem if values else "defaults"


@pytest.mark.parametrize("values", VALUE_SETS, ids=label)
def test_helm_lint_strict(values: Path | None) -> None:
    extra = ["-f", str(values)] if values else []
    done = helm("lint", "--strict", CHART, *extra)
    assert done.returncode == 0, done.stdout + done.stderr


# Custom resources: those the chart renders whose CRDs are in ../shared/crds, and the Gateway
# API's GRPCRoute, whose CRD is not there (kubernetes-validate has no schema for it either).
CUSTOM_KINDS = {"RayService", "PodMonitor", "PrometheusRule"}
UNCHECKED_KINDS = {"GRPCRoute"}


@pytest.mark.parametrize("values", VALUE_SETS, ids=label)
def test_core_objects_are_valid_kubernetes(values: Path | None) -> None:
    core = [o for o in rendered(values) if o["kind"] not in CUSTOM_KINDS | UNCHECKED_KINDS]
    assert {o["kind"] for o in core} >= {"ConfigMap", "Job", "NetworkPolicy"}
    for version in (KUBERNETES, kubernetes_validate.latest_version()):
        for o in core:
            kubernetes_validate.validate(o, version, strict=True)


def closed(schema: Any) -> Any:
    """The CRD's schema with every object that lists its properties closed to others (as the
    API server prunes them: a misspelt field is dropped there, refused here)."""
    if isinstance(schema, dict):
        schema = {k: closed(v) for k, v in schema.items()}
        if isinstance(schema.get("pattern"), str) and "(?i)" in schema["pattern"]:
            # Go's regexp takes a flag anywhere; Python's only at the start.
            schema["pattern"] = "(?i)" + schema["pattern"].replace("(?i)", "")
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [closed(v) for v in schema]
    return schema


@cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    schemas = {}
    for path in CRDS.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            api = f"{group}/{version['name']}"
            schemas[(api, kind)] = closed(version["schema"]["openAPIV3Schema"])
    return schemas


def test_closed_schemas_catch_a_misspelt_field() -> None:
    service = copy.deepcopy(one(rendered(None), "RayService"))
    head = service["spec"]["rayClusterConfig"]["headGroupSpec"]
    head["rayStartParam"] = head.pop("rayStartParams")
    with pytest.raises(jsonschema.ValidationError, match="rayStartParam"):
        jsonschema.validate(service, crd_schemas()[("ray.io/v1", "RayService")])


@pytest.mark.parametrize("values", VALUE_SETS, ids=label)
def test_custom_resources_match_their_crds(values: Path | None) -> None:
    custom = [o for o in rendered(values) if o["kind"] in CUSTOM_KINDS]
    assert {o["kind"] for o in custom} == CUSTOM_KINDS
    for o in custom:
        jsonschema.validate(o, crd_schemas()[(o["apiVersion"], o["kind"])])


@pytest.mark.parametrize("values", [*VALUE_SETS, EDGE_VALUES], ids=label)
def test_serve_config_v2_is_what_facegallery_serve_config_renders(
    values: Path | None, tmp_path: Path
) -> None:
    """One source of truth: the chart's serveConfigV2 is `facegallery serve config` for the
    settings the chart gives every process (its ConfigMap)."""
    objects = rendered(values)
    settings = one(objects, "ConfigMap", "-settings")["data"]["settings.yaml"]
    (tmp_path / "settings.yaml").write_text(settings)
    cli = [sys.executable, "-m", "facegallery", "serve", "config", "--config"]
    done = subprocess.run(
        [*cli, str(tmp_path / "settings.yaml")],
        capture_output=True,
        text=True,
        env=without_facegallery_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    chart = yaml.safe_load(one(objects, "RayService")["spec"]["serveConfigV2"])
    assert chart == yaml.safe_load(done.stdout)
    assert chart["http_options"]["host"] == "0.0.0.0"  # the serve Service reaches the proxies


@pytest.mark.parametrize("values", VALUE_SETS, ids=label)
def test_ray_pods_start_with_the_nodes_environment_and_name_their_ports(
    values: Path | None,
) -> None:
    objects = rendered(values)
    service = one(objects, "RayService")
    serve = yaml.safe_load(service["spec"]["serveConfigV2"])
    settings_file = Path("/etc/facegallery/settings.yaml")
    assert service["metadata"]["annotations"]["ray.io/overwrite-container-cmd"] == "true"
    for container in ray_containers(service):
        (command,) = container["args"]
        assert 'node_env="$(facegallery serve env)" && eval "$node_env"' in command
        assert command.endswith('eval "exec $KUBERAY_GEN_RAY_START_CMD"')
        env = {e["name"]: e for e in container["env"]}
        assert env["FACEGALLERY_CONFIG"]["value"] == str(settings_file)
        assert "FACEGALLERY_QUEUE__URL" in env
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["serve"] == serve["http_options"]["port"]
        assert ports["serve-grpc"] == serve["grpc_options"]["port"]
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert str(settings_file.parent) in mounts
    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    pyproject = (REPO / "pyproject.toml").read_text()
    ray = re.search(r'"ray\[serve\]==([\d.]+)"', pyproject)
    assert ray and cluster["rayVersion"] == ray.group(1)
    for template in [cluster["headGroupSpec"]["template"]] + [
        g["template"] for g in cluster["workerGroupSpecs"]
    ]:
        exporter = template["spec"]["containers"][1]
        assert exporter["command"][:3] == ["facegallery", "serve", "metrics"]
        head = template is cluster["headGroupSpec"]["template"]
        assert ("--gauges" in exporter["command"]) == head  # the gauges from one node only


def test_the_ray_containers_command_gives_ray_start_the_nodes_environment(
    tmp_path: Path,
) -> None:
    """The Ray container's command, run by bash as in the pod with KubeRay's variable set to a
    stand-in for `ray start` (a Python that prints its environment): every variable of
    `facegallery serve env` for the chart's settings reaches it, quoted intact."""
    objects = rendered(REPO / "helm" / "values" / "external.yaml")
    (tmp_path / "settings.yaml").write_text(
        one(objects, "ConfigMap", "-settings")["data"]["settings.yaml"]
    )
    (command,) = ray_containers(one(objects, "RayService"))[0]["args"]
    clean = without_facegallery_env()
    printer = f"{sys.executable} -c 'import json, os; print(json.dumps(dict(os.environ)))'"
    path = f"{Path(sys.executable).parent}{os.pathsep}{clean.get('PATH', '')}"
    env = {**clean, "PATH": path, "FACEGALLERY_CONFIG": str(tmp_path / "settings.yaml")}

    def start() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/bin/bash", "-c", "--", command],
            env={**env, "KUBERAY_GEN_RAY_START_CMD": printer},
            capture_output=True,
            text=True,
            check=False,
        )

    started = start()
    assert started.returncode == 0, started.stderr
    seen = json.loads(started.stdout)
    exported = subprocess.run(
        [sys.executable, "-m", "facegallery", "serve", "env"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    expected = dict(
        shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in exported.splitlines()
    )
    assert expected["FACEGALLERY_NODE_METRICS_DIR"] == "/var/run/facegallery/metrics"
    assert json.loads(expected["FACEGALLERY_PROXY_SERVING"])["http_port"] == 8080
    assert {name: seen.get(name) for name in expected} == expected
    # Settings a node cannot read stop the container before Ray starts without them.
    (tmp_path / "settings.yaml").write_text("serving:\n  http_port: not-a-port\n")
    refused = start()
    assert refused.returncode != 0 and refused.stdout == ""
    assert "http_port" in refused.stderr


def cluster_and_serve(*settings: str) -> tuple[dict[str, Any], str]:
    service = one(template(*[a for s in settings for a in ("--set", s)]), "RayService")
    return service["spec"]["rayClusterConfig"], service["spec"]["serveConfigV2"]


def test_serve_level_settings_change_the_application_in_place() -> None:
    """Replicas and batching reach the replicas through serveConfigV2 alone (KubeRay updates
    the application, no new cluster: an upgrade that needs no second cluster's worth of GPUs);
    what a node reads when it starts (the proxies' deadline bound) restarts the cluster."""
    cluster, serve = cluster_and_serve()
    for in_place in ("serving.detector.num_replicas=3", "detect.max_faces=3"):
        changed = cluster_and_serve(f"settings.{in_place}")
        assert changed[0] == cluster and changed[1] != serve, in_place
    # The proxies' bound (`serve env`), the collection the exporter counts (embed, models).
    for rolled in ("serving.max_deadline_s=60", "embed.flip_tta=false", "models.pack=x"):
        assert cluster_and_serve(f"settings.{rolled}")[0] != cluster, rolled


def test_the_gpu_values_ask_for_gpus_and_let_them_go() -> None:
    service = one(rendered(REPO / "helm" / "values" / "gpu.yaml"), "RayService")
    groups = {g["groupName"]: g for g in service["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    gpu = groups["gpu"]
    resources = gpu["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == 1
    assert gpu["minReplicas"] == 0
    assert gpu["template"]["spec"]["nodeSelector"] and gpu["template"]["spec"]["tolerations"]
    cpu_resources = groups["cpu"]["template"]["spec"]["containers"][0]["resources"]
    assert "nvidia.com/gpu" not in cpu_resources["limits"]
    serve = yaml.safe_load(service["spec"]["serveConfigV2"])
    deployments = {d["name"]: d for d in serve["applications"][0]["deployments"]}
    for name in ("Gateway", "EnrollmentWorkers"):  # kept off the GPU pods
        (needed,) = deployments[name]["ray_actor_options"]["resources"]
        assert needed in groups["cpu"]["resources"]
    assert "resources" not in gpu  # so the GPU pods never offer it
    gpus = {
        d["name"]: d["ray_actor_options"]["num_gpus"]
        for d in serve["applications"][0]["deployments"]
    }
    assert gpus["Detector"] > 0 and gpus["Embedder"] > 0 and gpus["Gateway"] == 0


def test_the_in_chart_redis_keeps_every_acknowledged_job() -> None:
    objects = rendered(REPO / "helm" / "values" / "redis-in-chart.yaml")
    redis = one(objects, "StatefulSet", "-redis")
    container = redis["spec"]["template"]["spec"]["containers"][0]
    args = " ".join(container["args"])
    assert "--appendonly yes" in args and "--appendfsync always" in args
    assert container["readinessProbe"] and container["livenessProbe"]
    assert redis["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"
    ray = ray_containers(one(objects, "RayService"))[0]
    url = {e["name"]: e for e in ray["env"]}["FACEGALLERY_QUEUE__URL"]["value"]
    assert url == f"redis://{redis['metadata']['name']}:6379/0"
    assert not [o for o in rendered(None) if "redis" in o["metadata"]["name"]]


def test_secrets_come_from_existing_secrets_for_gitops() -> None:
    objects = rendered(REPO / "helm" / "values" / "external.yaml")
    assert not [o for o in objects if o["kind"] == "Secret"]  # every secret is the user's
    env = {e["name"]: e for e in ray_containers(one(objects, "RayService"))[0]["env"]}
    assert env["FACEGALLERY_QUEUE__URL"]["valueFrom"]["secretKeyRef"]["name"] == "redis-url"
    token = env["FACEGALLERY_GALLERY__TOKEN"]["valueFrom"]["secretKeyRef"]
    assert token["name"] == "milvus-credentials"
    job = one(objects, "Job", "-admin-key")
    job_env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    key = job_env["FACEGALLERY_ADMIN_KEY"]["valueFrom"]["secretKeyRef"]
    assert key["name"] == "facegallery-admin-key"
    assert "post-upgrade" in job["metadata"]["annotations"]["helm.sh/hook"]


def test_the_prometheus_rule_and_dashboard_are_the_checked_files(tmp_path: Path) -> None:
    objects = rendered(None)
    rule = one(objects, "PrometheusRule")["spec"]
    written = yaml.safe_load((REPO / "deploy" / "prometheus" / "rules.yml").read_text())
    assert rule == written
    (tmp_path / "rendered.yml").write_text(yaml.safe_dump(rule))
    checked = promtool("check", "rules", tmp_path / "rendered.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    dashboard = one(objects, "ConfigMap", "-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    committed = json.loads((REPO / "deploy" / "grafana" / "facegallery.json").read_text())
    assert json.loads(dashboard["data"]["facegallery.json"]) == committed
    monitor = one(objects, "PodMonitor")
    jobs = {
        e["port"]: e["relabelings"][0]["replacement"]
        for e in monitor["spec"]["podMetricsEndpoints"]
    }
    assert jobs == {"exporter": "facegallery", "metrics": "ray"}  # the rules' job names


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("upgradeStrategy.type=BlueGreen", "value must be one of 'NewCluster'"),
        ("settings.serving.detectr.num_replicas=2", "'detectr' not allowed"),
        ("settings.serving.detector.max_batch_size=0", "minimum"),
        ("workerGroups.cpu.replica=3", "'replica' not allowed"),
        ("settings.gallery.uri=http://x:19530", "externalMilvus.uri"),
        ("redisServer.enabled=true", "exactly one of externalRedis.url"),
        ("settings.serving.host=127.0.0.1", "settings.serving.host is the chart's"),
        ("settings.serving.proxy_location=HeadOnly", "keep EveryNode"),
        ("upgradeStrategy.type=NewClusterWithIncrementalUpgrade", "'gatewayClassName'"),
    ],
)
def test_bad_values_are_refused_with_a_message_that_names_them(setting: str, message: str) -> None:
    done = helm("template", "fg", CHART, "--set", setting)
    assert done.returncode != 0
    assert message in done.stderr


def test_generated_files_are_what_the_generator_makes() -> None:
    """The serving defaults the template starts from, the values schema and the values
    reference are made from their sources (helm/generate.py); none may be edited by hand."""
    done = subprocess.run(
        [sys.executable, str(REPO / "helm" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_milvus_example_values_choose_their_mode() -> None:
    """The official Milvus chart cannot be fetched here (no network, no registry package):
    these files are checked against its values.yaml by hand (chart 5.0.19) and only parsed
    here."""
    modes = {
        p.stem: yaml.safe_load(p.read_text())["cluster"]["enabled"]
        for p in (REPO / "helm" / "milvus").glob("*.yaml")
    }
    assert modes == {"standalone": False, "cluster": True}
