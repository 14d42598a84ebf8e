"""The layering rule of ARCHITECTURE.md, checked on the real import graph (import-linter, with
the contracts in pyproject.toml): every import points down the layers, the client and the wire
schemas carry nothing of the server, every subpackage has its place in the layers, and the
package root holds nothing but its entry points."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "services" / "facegallery"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _layers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c["layers"] for c in config["contracts"] if c["type"] == "layers"]
    return [name.strip() for layer in layers for name in layer.split("|")]


def test_the_import_graph_keeps_every_contract() -> None:
    result = subprocess.run(
        [str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_every_subpackage_has_a_layer() -> None:
    subpackages = {
        f"facegallery.{p.name}" for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()
    }
    assert subpackages == set(_layers())


def test_the_package_root_holds_only_its_entry_points() -> None:
    modules = {p.name for p in PACKAGE.glob("*.py")}
    assert modules == {"__init__.py", "__main__.py"}


def test_an_import_that_points_up_is_caught(tmp_path: Path) -> None:
    """The checker is live: the same kind of contract over a small package with one arrow
    running back up (a low layer importing a high one) is reported broken."""
    package = tmp_path / "layered"
    for layer, body in [("high", ""), ("low", "import layered.high\n")]:
        (package / layer).mkdir(parents=True)
        (package / layer / "__init__.py").write_text(body)
    (package / "__init__.py").write_text("")
    config = tmp_path / "contracts.toml"
    config.write_text(
        '[tool.importlinter]\nroot_package = "layered"\n\n'
        '[[tool.importlinter.contracts]]\nname = "layers"\ntype = "layers"\n'
        'layers = ["layered.high", "layered.low"]\n'
    )
    result = subprocess.run(
        [str(LINT_IMPORTS), "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": ""},
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "layered.low -> layered.high" in result.stdout


@pytest.mark.parametrize("package", ["facegallery.client", "facegallery.wire"])
def test_importing_the_client_loads_nothing_of_the_server(package: str) -> None:
    """What a camera gateway or a web backend loads when it imports the client."""
    heavy = ["pymilvus", "redis", "onnxruntime", "onnx", "cv2", "ray", "numpy", "fastapi"]
    probe = f"import sys, {package}; print(' '.join(m for m in {heavy!r} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
