"""One command line over three transports: the same script of gallery commands runs in process
(the local client, a Milvus Lite file), over HTTP and over gRPC (the session's served app),
and prints the same lines with the same exit codes; the served-only errors (keys, URLs,
health) are one line each."""

from __future__ import annotations

import json
import re
import secrets
import shutil
from pathlib import Path

import cv2
import pytest
from typer.testing import CliRunner

from facegallery.assets.samples import Samples
from facegallery.cli import app
from tests.helpers import read_bgr
from tests.serving.conftest import Served

pytestmark = pytest.mark.slow
runner = CliRunner()
HEX_ID = re.compile(r"\b[0-9a-f]{32}\b")


def _transport(name: str, served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the command line at one transport (the local one at settings like the app's)."""
    if name == "local":
        monkeypatch.delenv("FACEGALLERY_URL", raising=False)
        monkeypatch.setenv("FACEGALLERY_GALLERY__URI", str(tmp_path / "local-gallery.db"))
        monkeypatch.setenv(
            "FACEGALLERY_MATCHING__THRESHOLDS_FILE",
            str(served.settings.matching.thresholds_file),
        )
        monkeypatch.setenv("FACEGALLERY_MODELS__DIR", str(served.settings.models.dir))
        return
    url = served.http_url if name == "http" else f"grpc://{served.grpc_target}"
    monkeypatch.setenv("FACEGALLERY_URL", url)
    monkeypatch.setenv("FACEGALLERY_API_KEY", served.admin)


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def _script(g: str, samples: Samples, folder: Path) -> list[tuple[int, str]]:
    """Every gallery command, its answers as (exit code, output with job ids masked)."""

    def photo(name: str) -> str:
        return str(samples.photo(name))

    steps: list[list[str]] = [
        ["enroll", "-g", g, "-u", "obama", photo("obama.jpg"), photo("group.jpg")],
        ["enroll", "-g", g, "-u", "collins", photo("astronaut.png")],
        ["enroll", "-g", g, "-u", "nobody", str(folder / "blank.png")],
        ["enroll-folder", "-g", g, str(folder / "people")],
        ["identify", "-g", g, photo("obama2.jpg")],
        ["identify", "-g", g, photo("grace_hopper.jpg"), "--top-k", "1"],
        ["identify", "-g", g, photo("obama2.jpg"), "--threshold", "0.99"],
        ["verify", "-g", g, "-u", "obama", photo("obama2.jpg")],
        ["verify", "-g", g, "-u", "obama", photo("biden.jpg")],
        ["verify", "-g", g, "-u", "obama", photo("biden.jpg"), "--threshold", "-1"],
        ["users", "-g", g, "--limit", "2"],
        ["users", "-g", g, "--after", "obama"],
        ["user", "-g", g, "-u", "obama"],
        ["user", "-g", g, "-u", "ghost"],
        ["stats", "-g", g],
        ["job", "not-a-job"],
        ["job", "0" * 32],
        ["identify", "-g", "Bad Gallery", photo("obama2.jpg")],
        ["identify", "-g", g, "/no/such.jpg"],
        ["delete-user", "-g", g, "-u", "collins"],
        ["delete-user", "-g", g, "-u", "collins"],
        ["stats", "-g", g],
    ]
    answers = []
    for step in steps:
        code, out, err = run(*step)
        said = [line for line in err.splitlines() if line.startswith(("error:", "(more:"))]
        answers.append((code, HEX_ID.sub("<id>", out + "\n".join(said))))  # no progress bars
    return answers


@pytest.fixture
def folder(samples: Samples, tmp_path: Path) -> Path:
    """A blank photo (no face) and a folder-per-person tree with one person without photos."""
    cv2.imwrite(str(tmp_path / "blank.png"), read_bgr(samples.photo("obama.jpg"))[:40, :40])
    for person in (14, 15):
        (tmp_path / "people" / f"s{person}").mkdir(parents=True)
        for k in (1, 2):
            image = read_bgr(samples.orl / f"s{person}" / f"{k}.pgm")
            cv2.imwrite(str(tmp_path / "people" / f"s{person}" / f"{k}.png"), image)
    (tmp_path / "people" / "empty").mkdir()
    return tmp_path


def test_the_same_script_answers_the_same_on_every_transport(
    served: Served,
    samples: Samples,
    folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    g = "cli-" + secrets.token_hex(4)
    answers = {}
    for transport in ("local", "http", "grpc"):
        _transport(transport, served, tmp_path / transport, monkeypatch)
        answers[transport] = _script(g if transport != "grpc" else g + "-grpc", samples, folder)
    grpc = [(code, text.replace(g + "-grpc", g)) for code, text in answers["grpc"]]
    for n, (local, http, over_grpc) in enumerate(
        zip(answers["local"], answers["http"], grpc, strict=True)
    ):
        assert local == http == over_grpc, (n, local, http, over_grpc)

    codes = [code for code, _ in answers["local"]]
    assert codes == [0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 2, 1, 2, 2, 0, 1, 0]
    text = [t for _, t in answers["local"]]
    assert "enrolled 1 of 2 image(s) for obama" in text[0]
    assert "group.jpg: rejected (multiple_faces)" in text[0]
    assert "blank.png: rejected (no_face)" in text[2]
    assert "2 user(s), 4 photo(s) enrolled" in text[3] and "empty: refused: no photos" in text[3]
    assert "obama (score" in text[4] and "unknown (closest" in text[5]
    assert "threshold 0.990 (explicit)" in text[6]
    assert text[7].startswith("match: obama") and text[8].startswith("no match: obama")
    assert text[9].startswith("match: obama") and "threshold -1.000" in text[9]
    assert text[10].split() == ["collins", "obama", "(more:", "--after", "obama)"]
    assert text[11].split() == ["s14", "s15"]
    assert "not enrolled" in text[13] and "invalid job id" in text[15]
    assert "does not exist" in text[16] and "gallery id" in text[17]
    assert text[18].strip() == "error: /no/such.jpg is not a file"
    assert text[14].startswith(f"{g}: 4 user(s), 6 template(s)")
    assert text[21].startswith(f"{g}: 3 user(s), 5 template(s)")
    for _, out in answers["local"]:
        assert "Traceback" not in out


def test_reruns_and_json_are_the_apis_on_every_transport(
    served: Served,
    samples: Samples,
    folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rerunning an import returns the same jobs (the keys come from the photos); --json is
    the API's own shape; `enroll --async` returns the job, which `job` then shows."""
    for transport in ("local", "http", "grpc"):
        _transport(transport, served, tmp_path / transport, monkeypatch)
        g = f"json-{transport}-" + secrets.token_hex(3)
        people = str(folder / "people")
        code, out, _ = run("enroll-folder", "-g", g, people, "--json")
        first = json.loads(out)
        assert code == 0 and first["users_enrolled"] == 2 and len(first["jobs"]) == 2
        code, again, _ = run("enroll-folder", "-g", g, people, "--json")
        assert code == 0 and json.loads(again) == first, transport
        assert json.loads(run("stats", "-g", g, "--json")[1]) == {
            "gallery": g,
            "users": 2,
            "templates": 4,
        }
        code, out, _ = run("users", "-g", g, "--limit", "1", "--json")
        assert json.loads(out) == {"user_ids": ["s14"], "next_page_token": "s14"}

        photo = str(samples.photo("obama.jpg"))
        code, out, _ = run("enroll", "-g", g, "-u", "obama", photo, "--async", "--json")
        queued = json.loads(out)
        assert code == 0 and queued["status"] in ("queued", "running", "done")
        code, out, _ = run("job", queued["job_id"], "--wait", "--json")
        done = json.loads(out)
        assert code == 0 and done["status"] == "done" and done["templates"] == 1
        code, out, _ = run("job", queued["job_id"])
        assert out.startswith(f"job {queued['job_id']}: done (obama in {g}, 1 image(s)")
        code, out, _ = run("identify", "-g", g, str(samples.photo("obama2.jpg")), "--json")
        answer = json.loads(out)
        assert answer["faces"][0]["decision"] == "obama"
        assert answer["threshold"] == answer["operating_point"]["threshold"]


def test_served_only_errors_are_one_line(
    served: Served, samples: Samples, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for transport in ("http", "grpc"):
        _transport(transport, served, tmp_path, monkeypatch)
        code, out, _ = run("health")
        assert code == 0 and "SERVING" in out
        monkeypatch.delenv("FACEGALLERY_API_KEY")
        code, _, err = run("stats", "-g", "nobody")
        assert code == 1 and "API key is required" in err and len(err.strip().splitlines()) == 1
        dead = "http://127.0.0.1:9" if transport == "http" else "grpc://127.0.0.1:9"
        code, _, err = run("health", "--url", dead)
        assert code == 1 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    code, _, err = run("stats", "-g", "nobody", "--url", "ftp://somewhere")
    assert code == 2 and "http://host:port or grpc://host:port" in err
    shutil.rmtree(tmp_path, ignore_errors=True)
