"""The cluster image (``deploy/docker/Dockerfile``): hadolint finds nothing, its production
base carries the pinned Ray, and it really builds (buildah, on a Debian base made with
debootstrap, since no registry can be pulled from here) into an image in which
`facegallery demo --embedded` and `facegallery serve config` run as the non-root user."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.ops.tools import tool

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
BASE_IMAGE = "localhost/facegallery-base:bookworm"
IMAGE = "localhost/facegallery:ci"
# The debootstrapped base is kept between runs on one machine (about a minute to make).
BASE_ROOTFS = Path.home() / ".cache" / "facegallery" / "image-base" / "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def run(*command: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, (
        f"{' '.join(command)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done


def buildah(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return run(tool("buildah"), "--storage-driver", "vfs", *args, timeout=timeout)


def test_hadolint_finds_nothing() -> None:
    linted = subprocess.run(
        [tool("hadolint"), str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_the_production_base_carries_the_pinned_ray() -> None:
    base = re.search(r"^ARG BASE=\S+/ray:(\d+\.\d+\.\d+)-py311", DOCKERFILE.read_text(), re.M)
    pinned = re.search(r'"ray\[serve\]==([\d.]+)"', (REPO / "pyproject.toml").read_text())
    assert base and pinned and base.group(1) == pinned.group(1)


@pytest.fixture(scope="module")
def base_image() -> str:
    """A Debian bookworm with python3, as a local image (made once per machine)."""
    if not (BASE_ROOTFS / "usr" / "bin" / "python3").exists():
        shutil.rmtree(BASE_ROOTFS, ignore_errors=True)
        BASE_ROOTFS.parent.mkdir(parents=True, exist_ok=True)
        run(
            tool("debootstrap"), "--variant=minbase",
            "--include=python3,python3-venv,ca-certificates",
            "bookworm", str(BASE_ROOTFS), DEBIAN_MIRROR,
        )  # fmt: skip
    listed = subprocess.run(
        [tool("buildah"), "--storage-driver", "vfs", "images", "--quiet", BASE_IMAGE],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if listed.returncode != 0:
        container = buildah("from", "scratch").stdout.strip()
        buildah("copy", container, str(BASE_ROOTFS), "/")
        buildah("commit", "--rm", container, BASE_IMAGE)
    return BASE_IMAGE


@pytest.fixture(scope="module")
def image(base_image: str) -> Iterator[str]:
    """The project's image, built from the working tree (the host's CA bundle for pip)."""
    buildah(
        "bud", "--isolation", "chroot", "--network", "host", "--layers=false",
        "--build-arg", f"BASE={base_image}", "--build-arg", f"PIP_CERT={CA_BUNDLE}",
        "--volume", f"{CA_BUNDLE}:{CA_BUNDLE}:ro",
        "-f", str(DOCKERFILE), "-t", IMAGE, str(REPO),
    )  # fmt: skip
    yield IMAGE
    subprocess.run(
        [tool("buildah"), "--storage-driver", "vfs", "rmi", "--force", IMAGE],
        capture_output=True, check=False,
    )  # fmt: skip


@pytest.mark.slow
def test_the_image_builds_and_runs_the_demo_and_renders_the_serve_config(image: str) -> None:
    container = buildah("from", image).stdout.strip()
    try:
        inside = ("run", "--isolation", "chroot", container, "--")
        assert buildah(*inside, "id", "-u").stdout.strip() == "1000"  # not root
        demo = buildah(*inside, "facegallery", "demo", "--embedded").stdout
        assert "barack-obama: job done, 2 of 2 photo(s) enrolled" in demo
        assert "grace_hopper.jpg (Grace Hopper, never enrolled): unknown" in demo
        config = yaml.safe_load(buildah(*inside, "facegallery", "serve", "config").stdout)
        assert config["applications"][0]["import_path"] == "facegallery.serving.app:build"
        # What the chart's pods run: the node's environment, KubeRay's worker probe (wget).
        node_env = buildah(*inside, "facegallery", "serve", "env").stdout
        assert "FACEGALLERY_NODE_METRICS_DIR" in node_env
        assert "GNU Wget" in buildah(*inside, "wget", "--version").stdout
        # No Milvus server wheel in the cluster image: its Milvus is its own.
        assert (
            "not installed"
            in subprocess.run(
                [
                    tool("buildah"),
                    "--storage-driver",
                    "vfs",
                    *inside,
                    "facegallery",
                    "milvus",
                    "prepare",
                ],
                capture_output=True,
                text=True,
                check=False,
            ).stderr
        )
    finally:
        subprocess.run(
            [tool("buildah"), "--storage-driver", "vfs", "rm", container],
            capture_output=True,
            check=False,
        )
