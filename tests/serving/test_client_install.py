"""The client installs on its own: the package without its ``server`` extra, built as a wheel
and installed into a clean virtual environment, calls the session's running service over
HTTP and gRPC, and nothing of the server (Milvus, Redis, ONNX Runtime, OpenCV, Ray) is
installed beside it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serving.conftest import Served

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
SERVER_ONLY = ["pymilvus", "redis", "onnxruntime", "cv2", "ray", "numpy", "fastapi", "torch"]

CALLS = """
import importlib.util, json, sys
from facegallery.client import GrpcClient, HttpClient
from facegallery.core.errors import NotFound
url, target, key, gallery = sys.argv[1:]
answers = {}
for name, client in [("http", HttpClient(url, key)), ("grpc", GrpcClient(target, key))]:
    stats = client.gallery_stats(gallery)
    try:
        client.get_user(gallery, "nobody-here")
        missing = "found"
    except NotFound as exc:
        missing = exc.reason
    answers[name] = {"users": stats.users, "missing": missing}
answers["installed"] = [m for m in SERVER_ONLY if importlib.util.find_spec(m) is not None]
print(json.dumps(answers))
""".replace("SERVER_ONLY", repr(SERVER_ONLY))


def _run(*command: str | Path, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, cwd=cwd, check=False
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


def test_the_client_alone_calls_the_service(served: Served, tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy: the build writes nothing into the checkout
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copy(ROOT / "README.md", source)
    shutil.copytree(
        ROOT / "services", source / "services", ignore=shutil.ignore_patterns("__pycache__")
    )
    wheels = tmp_path / "wheels"
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        wheels,
        source,
    )
    (wheel,) = wheels.glob("facegallery-*.whl")
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    _run(python, "-m", "pip", "install", "--quiet", wheel)

    out = _run(
        python,
        "-c",
        CALLS,
        served.http_url,
        served.grpc_target,
        served.admin,
        served.gallery,
        cwd=tmp_path,
    )
    answers = json.loads(out)
    assert answers["installed"] == []
    for transport in ("http", "grpc"):
        assert answers[transport]["users"] >= 0
        assert answers[transport]["missing"] == "not_found", answers
