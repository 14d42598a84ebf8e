"""The ``facegallery`` command: happy paths and clear errors, through the real entry point."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from facegallery.assets.samples import Samples
from facegallery.cli import app
from facegallery.core.config import Settings
from facegallery.models import PACKS, ModelStore
from tests.helpers import read_bgr

runner = CliRunner()


def _tiny_pairs_set(samples: Samples, root: Path, people: int = 12) -> Path:
    """ORL people as PNG folders, one faceless image, and a CSV of pairs without folds."""
    for p in range(1, people + 1):
        (root / f"s{p}").mkdir(parents=True)
        for k in (1, 2, 3):
            cv2.imwrite(
                str(root / f"s{p}" / f"{k}.png"), read_bgr(samples.orl / f"s{p}" / f"{k}.pgm")
            )
    cv2.imwrite(str(root / "s1" / "blank.png"), np.full((112, 92, 3), 128, np.uint8))
    rows = [("s1/1.png", "s1/blank.png", 1)]
    for p in range(1, people + 1):
        rows += [(f"s{p}/1.png", f"s{p}/2.png", 1), (f"s{p}/2.png", f"s{p}/3.png", 1)]
        rows += [
            (f"s{p}/1.png", f"s{p % people + 1}/3.png", 0),
            (f"s{p}/3.png", f"s{(p + 2) % people + 1}/1.png", 0),
        ]
    pairs = root / "pairs.csv"
    with pairs.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["img_a", "img_b", "same"])
        writer.writerows(rows)
    return pairs


@pytest.mark.slow
def test_eval_pairs_on_a_tiny_set(samples: Samples, tmp_path: Path) -> None:
    root = tmp_path / "set"
    pairs = _tiny_pairs_set(samples, root)
    out, plot = tmp_path / "report.json", tmp_path / "roc.png"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "facegallery",
            "eval",
            "pairs",
            "--root",
            str(root),
            "--pairs",
            str(pairs),
            "--json",
            str(out),
            "--plot",
            str(plot),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert set(report) == {
        "accuracy_mean",
        "accuracy_std",
        "auc",
        "tar_at_far",
        "threshold",
        "pairs",
        "failed_pairs",
        "images",
        "seconds",
        "model_id",
        "kfold_pairs",
    }
    assert report["pairs"] == 49 and report["images"] == 37 and report["failed_pairs"] == 1
    assert 25 <= report["kfold_pairs"] < 49  # all 25 genuine pairs; cross-fold impostors out
    assert report["accuracy_mean"] >= 0.9  # only the faceless pair may be wrong, and it is
    assert report["accuracy_mean"] < 1.0
    assert report["auc"] > 0.95
    assert "0.1" in report["tar_at_far"] and "0.001" not in report["tar_at_far"]
    assert report["model_id"].startswith("sface-2021dec-")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_pairs_json_on_stdout(samples: Samples, tmp_path: Path) -> None:
    pairs = _tiny_pairs_set(samples, tmp_path / "set")
    result = runner.invoke(
        app, ["eval", "pairs", "--root", str(tmp_path / "set"), "--pairs", str(pairs)]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["pairs"] == 49


def test_eval_pairs_errors(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["eval", "pairs", "--root", str(tmp_path / "no"), "--pairs", "x.csv"]
    )
    assert result.exit_code == 2 and "is not a folder" in result.stderr
    result = runner.invoke(
        app, ["eval", "pairs", "--root", str(tmp_path), "--pairs", str(tmp_path / "x.csv")]
    )
    assert result.exit_code == 2 and "does not exist" in result.stderr
    result = runner.invoke(
        app,
        [
            "eval",
            "pairs",
            "--root",
            str(tmp_path),
            "--pairs",
            "x.csv",
            "--model-pack",
            "insightface",
        ],
    )
    assert result.exit_code == 2


def test_detect_human_and_json(samples: Samples) -> None:
    result = runner.invoke(app, ["detect", str(samples.photo("group.jpg"))])
    assert result.exit_code == 0, result.output
    assert "6 face(s)" in result.stdout and "rejected: extreme_pose" in result.stdout
    result = runner.invoke(app, ["detect", str(samples.photo("astronaut.png")), "--json"])
    faces = json.loads(result.stdout)["faces"]
    assert len(faces) == 1 and faces[0]["quality"]["passed"] is True
    assert len(faces[0]["landmarks"]) == 5 and len(faces[0]["box"]) == 4


def test_detect_errors(tmp_path: Path) -> None:
    result = runner.invoke(app, ["detect", str(tmp_path / "missing.jpg")])
    assert result.exit_code == 2 and "is not a file" in result.stderr
    junk = tmp_path / "junk.jpg"
    junk.write_text("hello")
    result = runner.invoke(app, ["detect", str(junk)])
    assert result.exit_code == 2 and "not a supported image" in result.stderr
    assert "Traceback" not in result.output


def test_noncommercial_pack_refused_without_acknowledgement(samples: Samples) -> None:
    result = runner.invoke(
        app, ["detect", str(samples.photo("astronaut.png")), "--model-pack", "insightface"]
    )
    assert result.exit_code == 1 and "non-commercial" in result.stderr


def test_embedded_demo() -> None:
    result = runner.invoke(app, ["demo", "--embedded"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "barack-obama: job done, 2 of 2 photo(s) enrolled" in out  # the served demo's line
    assert "group.jpg refused (multiple_faces)" in out
    assert "obama2.jpg (Barack Obama, another photo): barack-obama" in out
    assert "orl/s3/9.pgm (ORL person s3, another photo): orl-s3" in out
    assert "grace_hopper.jpg (Grace Hopper, never enrolled): unknown" in out
    assert "claims barack-obama: match" in out and "claims joe-biden: no match" in out
    assert runner.invoke(app, ["demo", "--embedded"]).stdout.count("enrolled") == out.count(
        "enrolled"
    )  # rerunnable


def test_models_list() -> None:
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0
    assert "yunet-2023mar-" in result.stdout and "insightface" in result.stdout


def test_bad_config_file(tmp_path: Path, samples: Samples) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("detect:\n  score_threshold: 7\n")
    result = runner.invoke(
        app, ["detect", str(samples.photo("astronaut.png")), "--config", str(config)]
    )
    assert result.exit_code == 2 and "is invalid" in result.stderr


def test_models_prepare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, accurate_settings: Settings
) -> None:
    monkeypatch.setenv("FACEGALLERY_MODELS__DIR", str(tmp_path / "models"))
    result = runner.invoke(app, ["models", "prepare", "--pack", "default"])
    assert result.exit_code == 0, result.output
    assert "default: yunet-2023mar-" in result.stdout and "default: sface-2021dec-" in result.stdout
    assert len(list((tmp_path / "models").glob("*.onnx"))) == 2
    result = runner.invoke(app, ["models", "prepare", "--pack", "insightface"])
    assert result.exit_code == 1 and "non-commercial" in result.stderr
    # The accurate pack: its SFace is the one already there; dlib's two files are rebuilt
    # (the network as ONNX, the landmark model as arrays), the same bytes on every machine.
    result = runner.invoke(app, ["models", "prepare", "--pack", "accurate"])
    assert result.exit_code == 0, result.output
    prepared = {line.split()[1] for line in result.stdout.splitlines()}
    store = ModelStore(accurate_settings.models)
    cached = {store.load(spec).model_id for spec in PACKS["accurate"].models}
    assert prepared == cached
    assert len(list((tmp_path / "models").glob("*.onnx"))) == 3
    assert len(list((tmp_path / "models").glob("dlib-landmarks-5-*.npz"))) == 1
    result = runner.invoke(app, ["models", "prepare", "--pack", "nope"])
    assert result.exit_code == 2 and "unknown model pack" in result.stderr


def test_samples_fetch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEGALLERY_SAMPLES_DIR", str(tmp_path / "samples"))
    result = runner.invoke(app, ["samples", "fetch"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "samples" / "photos" / "obama.jpg").is_file()
    assert len(list((tmp_path / "samples" / "orl").glob("s*/*.pgm"))) == 400


def test_unreadable_file_is_one_line(samples: Samples, monkeypatch: pytest.MonkeyPatch) -> None:
    """Permission errors cannot be made real for root (tests run as root in CI): simulated."""

    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    result = runner.invoke(app, ["detect", str(samples.photo("astronaut.png"))])
    assert result.exit_code == 1 and "Permission denied" in result.stderr
    assert "Traceback" not in result.output
