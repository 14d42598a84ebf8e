"""`facegallery client ...` against the session's served app, over HTTP and gRPC: every
command's happy path, and its errors as one line with a non-zero exit."""

from __future__ import annotations

import json
import secrets
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from facegallery.assets.samples import Samples
from facegallery.cli import app
from tests.serving.conftest import Served

pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture(params=["http", "grpc"])
def url(request: pytest.FixtureRequest, served: Served, monkeypatch: pytest.MonkeyPatch) -> str:
    chosen = served.http_url if request.param == "http" else f"grpc://{served.grpc_target}"
    monkeypatch.setenv("FACEGALLERY_URL", chosen)
    monkeypatch.setenv("FACEGALLERY_API_KEY", served.admin)
    return chosen


def client(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["client", *args])
    return result.exit_code, result.stdout, result.stderr


def test_every_command(url: str, samples: Samples, tmp_path: Path) -> None:
    g = "cli-" + secrets.token_hex(4)
    code, out, _ = client("enroll", "-g", g, "-u", "obama", str(samples.photo("obama.jpg")))
    assert code == 0 and "enrolled 1 of 1" in out, out
    code, out, _ = client("identify", "-g", g, str(samples.photo("obama2.jpg")))
    assert code == 0 and "obama (score" in out, out
    code, out, _ = client("verify", "-g", g, "-u", "obama", str(samples.photo("obama2.jpg")))
    assert code == 0 and "match" in out
    code, out, _ = client("verify", "-g", g, "-u", "obama", str(samples.photo("biden.jpg")))
    assert code == 1 and "no match" in out

    people = tmp_path / "people"
    for user, photo in [("collins", "astronaut.png"), ("crowd", "group.jpg")]:
        (people / user).mkdir(parents=True)
        shutil.copy(samples.photo(photo), people / user / photo)
    (people / "empty").mkdir()
    code, out, _ = client("enroll-folder", "-g", g, str(people), "--json")
    summary = json.loads(out)
    assert code == 0 and summary["users_enrolled"] == 1 and summary["images_rejected"] == 1
    assert summary["rejected"][0]["reason"] == "multiple_faces"
    assert summary["users_refused"] == [{"user_id": "empty", "reason": "no photos"}]

    code, out, _ = client("users", "-g", g)
    assert code == 0 and out.split() == ["collins", "obama"]
    code, out, _ = client("user", "-g", g, "-u", "obama", "--json")
    assert code == 0 and json.loads(out)["templates"][0]["source"] == "obama.jpg"
    code, out, _ = client("stats", "-g", g)
    assert code == 0 and "2 user(s), 2 template(s)" in out
    job_id = summary["jobs"][0]
    code, out, _ = client("job", job_id, "--wait")
    assert code == 0 and f"job {job_id}: done" in out
    code, out, _ = client("delete-user", "-g", g, "-u", "obama")
    assert code == 0 and "1 template(s)" in out
    code, out, _ = client("health")
    assert code == 0 and "SERVING" in out


def test_clear_errors(url: str, samples: Samples, monkeypatch: pytest.MonkeyPatch) -> None:
    photo = str(samples.photo("obama2.jpg"))
    code, _, err = client("identify", "-g", "nobody", "/no/such.jpg")
    assert code == 2 and err.strip() == "error: /no/such.jpg is not a file"
    code, _, err = client("user", "-g", "nobody", "-u", "ghost")
    assert code == 1 and "not enrolled" in err and len(err.strip().splitlines()) == 1
    code, _, err = client("identify", "-g", "Bad Gallery", photo)
    assert code == 2 and "gallery id" in err
    monkeypatch.delenv("FACEGALLERY_API_KEY")
    code, _, err = client("stats", "-g", "nobody")
    assert code == 1 and "API key is required" in err
    code, _, err = client("stats", "-g", "nobody", "--url", "ftp://somewhere")
    assert code == 2 and "http://host:port or grpc://host:port" in err
    dead = "http://127.0.0.1:9" if url.startswith("http") else "grpc://127.0.0.1:9"
    code, _, err = client("health", "--url", dead)
    assert code == 1 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
