"""The everyday gallery commands, through the real CLI in process (the local client) on the
scratch Milvus Lite file; tests/serving/test_cli_transports.py runs them over all three
transports."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
from typer.testing import CliRunner

from facegallery.assets.samples import Samples
from facegallery.cli import app
from tests.helpers import read_bgr
from tests.test_cli import _tiny_pairs_set

runner = CliRunner()


def _run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_enroll_identify_verify_users_stats_delete(samples: Samples) -> None:
    photo = samples.photo
    code, out, _ = _run(
        "enroll", "-g", "cli", "-u", "obama", str(photo("obama.jpg")), str(photo("group.jpg"))
    )
    assert (
        code == 0 and "enrolled 1 of 2" in out and "group.jpg: rejected (multiple_faces)" in out
    ), _
    assert _run("enroll", "-g", "cli", "-u", "collins", str(photo("astronaut.png")))[0] == 0

    code, out, _ = _run("identify", "-g", "cli", str(photo("obama2.jpg")))
    assert code == 0 and "obama (score" in out
    assert "(far_extended for FPIR 0.01 at 2 users)" in out  # too small to self-calibrate
    code, out, _ = _run("identify", "-g", "cli", str(photo("grace_hopper.jpg")), "--json")
    answer = json.loads(out)
    assert answer["faces"][0]["decision"] == "unknown" and answer["faces"][0]["searched"]
    assert answer["model_id"].endswith("+flip")
    point = answer["operating_point"]
    assert point["method"] == "far_extended" and answer["threshold"] == point["threshold"]
    assert (point["gallery_users"], point["gallery_templates"]) == (2, 2)
    code, out, _ = _run("identify", "-g", "cli", str(photo("obama2.jpg")), "--threshold", "0.99")
    assert "unknown (closest obama" in out and "threshold 0.990 (explicit)" in out
    code, out, _ = _run("calibrate-gallery", "-g", "cli", "--fpir", "0.1", "--json")
    assert code == 0 and json.loads(out)["operating_point"]["target_fpir"] == 0.1
    code, out, _ = _run("calibrate-gallery", "-g", "cli")
    assert code == 0 and out.startswith("cli: 2 leave-one-out searches; threshold")

    code, out, _ = _run("verify", "-g", "cli", "-u", "obama", str(photo("obama2.jpg")), "--json")
    assert code == 0 and json.loads(out)["match"] is True
    code, out, _ = _run("verify", "-g", "cli", "-u", "collins", str(photo("obama2.jpg")))
    assert code == 1 and out.startswith("no match")  # the answer is no: exit status 1

    code, out, _ = _run("users", "-g", "cli", "--limit", "1", "--json")
    page = json.loads(out)
    assert page["user_ids"] == ["collins"] and page["next_page_token"] == "collins"
    assert _run("users", "-g", "cli", "--after", "collins")[1].split() == ["obama"]

    code, out, _ = _run("stats", "-g", "cli", "--json")
    assert json.loads(out)["users"] == 2 and json.loads(out)["templates"] == 2

    code, out, _ = _run("user", "-g", "cli", "-u", "obama", "--json")
    record = json.loads(out)
    assert code == 0 and [t["source"] for t in record["templates"]] == ["obama.jpg"]
    assert "embedding" not in out and record["created_at"] <= record["updated_at"]
    code, out, _ = _run("user", "-g", "cli", "-u", "obama")
    assert out.startswith("obama in cli: 1 template(s)")
    code, _, err = _run("user", "-g", "cli", "-u", "nobody")
    assert code == 1 and "not enrolled" in err

    code, out, _ = _run("delete-user", "-g", "cli", "-u", "collins")
    assert code == 0 and "deleted collins" in out
    code, _, err = _run("delete-user", "-g", "cli", "-u", "collins")
    assert code == 1 and "not enrolled" in err
    assert _run("stats", "-g", "cli")[1].startswith("cli: 1 user(s), 1 template(s)")


def test_clear_errors(samples: Samples, tmp_path: Path) -> None:
    photo = str(samples.photo("obama.jpg"))
    code, _, err = _run("enroll", "-g", "cli-err", "-u", 'a" or "1"=="1', photo)
    assert code == 2 and "invalid user id" in err
    code, _, err = _run("identify", "-g", "Bad Gallery", photo)
    assert code == 2 and "invalid gallery id" in err
    code, _, err = _run("verify", "-g", "cli-err", "-u", "nobody", photo)
    assert code == 1 and "not enrolled" in err
    code, _, err = _run("identify", "-g", "cli-err", photo, "--threshold", "7")
    assert code == 2 and "threshold" in err
    code, _, err = _run("identify", "-g", "cli-err", photo, "--fpir", "0.5")
    assert code == 2 and "target_fpir" in err and "0.1" in err
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), read_bgr(samples.photo("obama.jpg"))[:40, :40])
    code, out, err = _run("enroll", "-g", "cli-err", "-u", "someone", str(blank))
    assert code == 1 and "rejected (no_face)" in out
    code, _, err = _run("enroll", "-g", "cli-err", "-u", "someone", str(tmp_path / "nope.jpg"))
    assert code == 2 and "is not a file" in err
    for out_err in (out, err):
        assert "Traceback" not in out_err


def test_enroll_folder(samples: Samples, tmp_path: Path) -> None:
    root = tmp_path / "people"
    for p in (1, 2, 3):
        (root / f"orl-s{p}").mkdir(parents=True)
        for k in (1, 2):
            cv2.imwrite(
                str(root / f"orl-s{p}" / f"{k}.png"), read_bgr(samples.orl / f"s{p}" / f"{k}.pgm")
            )
    cv2.imwrite(str(root / "orl-s1" / "tiny.png"), read_bgr(samples.orl / "s1" / "3.pgm")[:30, :30])
    (root / "bad name").mkdir()
    cv2.imwrite(str(root / "bad name" / "1.png"), read_bgr(samples.orl / "s4" / "1.pgm"))
    (root / "empty").mkdir()
    code, out, _ = _run("enroll-folder", "-g", "folder", str(root), "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["users_enrolled"] == 3 and summary["images_enrolled"] == 6
    assert summary["images_rejected"] == 1 and summary["rejected"][0]["image"] == "orl-s1/tiny.png"
    refused = {r["user_id"]: r["reason"] for r in summary["users_refused"]}
    assert "invalid user id" in refused["bad name"] and refused["empty"] == "no photos"
    code, out, _ = _run("enroll-folder", "-g", "folder", str(root))
    assert "3 user(s), 6 photo(s) enrolled" in out and "orl-s1/tiny.png: rejected" in out
    assert _run("stats", "-g", "folder", "--json")[1].count('"templates": 6') == 1  # idempotent
    assert _run("enroll-folder", "-g", "folder", str(tmp_path / "none"))[0] == 2


def test_calibrate(samples: Samples, tmp_path: Path) -> None:
    pairs = _tiny_pairs_set(samples, tmp_path / "set")
    root = str(tmp_path / "set")
    code, out, _ = _run(
        "calibrate", "--root", root, "--pairs", str(pairs), "--far", "0.1", "--json"
    )
    assert code == 0, out
    result = json.loads(out)
    assert result["far"] <= 0.1 and result["model_id"].endswith("+flip")
    stored = json.loads(Path(_thresholds_file()).read_text())
    assert stored[result["model_id"]]["threshold"] == result["threshold"]
    code, _, err = _run("calibrate", "--root", root, "--pairs", str(pairs), "--far", "0.001")
    assert code == 2 and "impostor pairs cannot measure" in err


def _thresholds_file() -> str:
    import os

    return os.environ["FACEGALLERY_MATCHING__THRESHOLDS_FILE"]


@pytest.mark.slow
def test_eval_identify(samples: Samples, tmp_path: Path) -> None:
    root = tmp_path / "set"
    for p in range(1, 9):
        (root / f"s{p}").mkdir(parents=True)
        for k in range(1, 4 if p <= 6 else 2):
            cv2.imwrite(
                str(root / f"s{p}" / f"{k}.png"), read_bgr(samples.orl / f"s{p}" / f"{k}.pgm")
            )
    out = tmp_path / "report.json"
    code, _, err = _run(
        "eval", "identify", "--root", str(root), "--enroll-per-identity", "1", "--json", str(out)
    )
    assert code == 0, err
    report = json.loads(out.read_text())
    assert (
        report["gallery_users"] == 6
        and report["mated_probes"] == 12
        and report["nonmated_probes"] == 2
    )
    assert report["rank1"] >= 0.9
    assert report["operating_point"]["method"] == "far_extended"
    code, _, err = _run(
        "eval", "identify", "--root", str(root), "--enroll-per-identity", "2", "--min-images", "2"
    )
    assert code == 2 and "min-images" in err
