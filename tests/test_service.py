"""FaceService with the real models and a real Milvus Lite gallery: enroll, verify, identify."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from facegallery.assets.samples import Samples
from facegallery.core.errors import InvalidInput, NotFound
from facegallery.gallery import NewTemplate
from facegallery.service.enrollment import ImageInput
from facegallery.service.face_service import FaceService
from tests.helpers import encode, read_bgr

_galleries = itertools.count()


@pytest.fixture
def gallery() -> str:
    """A fresh gallery (tenant) per test in the session's Milvus Lite file."""
    return f"svc-{next(_galleries)}"


@pytest.fixture
def obama_enrolled(service: FaceService, samples: Samples, gallery: str) -> bytes:
    """Obama enrolled from one photo; returns another photo of him as the probe, checked to
    be identified."""
    service.enroll(gallery, "obama", [_photo(samples, "obama.jpg")])
    probe = samples.photo("obama2.jpg").read_bytes()
    assert service.identify(gallery, probe)[0].decision == "obama"
    return probe


def _photo(samples: Samples, name: str) -> ImageInput:
    return ImageInput(name, samples.photo(name).read_bytes())


def test_enroll_then_identify_and_verify(
    service: FaceService, samples: Samples, gallery: str
) -> None:
    result = service.enroll(
        gallery, "obama", [_photo(samples, "obama.jpg"), _photo(samples, "obama3.jpg")]
    )
    assert result.enrolled == 2 and result.templates == 2
    assert all(o.template_id and o.quality and o.quality.passed for o in result.outcomes)
    service.enroll(gallery, "collins", [_photo(samples, "astronaut.png")])

    faces = service.identify(gallery, samples.photo("obama2.jpg").read_bytes())
    assert len(faces) == 1 and faces[0].decision == "obama" and faces[0].searched
    assert faces[0].candidates[0].score > faces[0].candidates[1].score

    stranger = service.identify(gallery, samples.photo("grace_hopper.jpg").read_bytes())
    assert stranger[0].decision == "unknown" and stranger[0].candidates  # searched, no match

    yes = service.verify(gallery, "obama", samples.photo("obama2.jpg").read_bytes())
    no = service.verify(gallery, "collins", samples.photo("obama2.jpg").read_bytes())
    assert yes.match and not no.match
    assert yes.score > yes.threshold > no.score
    assert yes.quality.passed


def test_identify_and_verify_give_one_score_for_one_user_and_photo(
    service: FaceService, samples: Samples, gallery: str
) -> None:
    """Verify scores the claimed user as identify does (their fused score), not by their
    best template, which would be tried against the 1:1 threshold once per template."""
    photos = [_photo(samples, n) for n in ("obama.jpg", "obama3.jpg", "obama_partial_face.jpg")]
    assert service.enroll(gallery, "obama", photos).templates == 3
    probe = samples.photo("obama2.jpg").read_bytes()
    identified = service.identify(gallery, probe)[0].candidates[0]
    verified = service.verify(gallery, "obama", probe)
    assert identified.user_id == "obama" and verified.fusion == "top2_mean"
    assert verified.score == pytest.approx(identified.score, abs=1e-5)
    cosines = np.array([t.embedding for t in service.templates(gallery, "obama")])
    embedding = service.analyze([probe])[0]
    assert not isinstance(embedding, Exception) and embedding[0].embedding is not None
    scores = np.sort(cosines @ embedding[0].embedding)
    assert verified.score == pytest.approx(scores[-2:].mean(), abs=1e-5)
    assert verified.score < scores[-1]  # the best template alone: a higher, looser score


def test_threshold_override_changes_the_decision(
    service: FaceService, gallery: str, obama_enrolled: bytes
) -> None:
    probe = obama_enrolled
    assert service.identify(gallery, probe, threshold=0.99)[0].decision == "unknown"
    assert not service.verify(gallery, "obama", probe, threshold=0.99).match


def test_enroll_refusals_with_reasons(service: FaceService, samples: Samples, gallery: str) -> None:
    blurred = cv2.GaussianBlur(read_bgr(samples.photo("grace_hopper.jpg")), (0, 0), 6)
    images = [
        _photo(samples, "group.jpg"),
        ImageInput("blank.png", encode(np.full((200, 200, 3), 90, np.uint8))),
        ImageInput("blurred.png", encode(blurred)),
        ImageInput("junk.jpg", b"definitely not a jpeg"),
        _photo(samples, "grace_hopper.jpg"),
    ]
    result = service.enroll(gallery, "grace", images)
    reasons = [o.reason for o in result.outcomes]
    assert reasons == ["multiple_faces", "no_face", "low_quality", "invalid_image", None]
    assert "blurry" in result.outcomes[2].message
    assert result.enrolled == 1 and result.templates == 1


def test_face_index_picks_one_face_of_many(
    service: FaceService, samples: Samples, gallery: str
) -> None:
    group = _photo(samples, "group.jpg")
    assert service.enroll(gallery, "third", [group], face_index=2).enrolled == 1
    assert (
        service.enroll(gallery, "ninth", [group], face_index=9).outcomes[0].reason == "no_such_face"
    )
    faces = service.identify(gallery, group.data)
    assert [f.decision for f in faces].count("third") == 1
    assert faces[2].decision == "third"


def test_enrollment_is_idempotent(service: FaceService, samples: Samples, gallery: str) -> None:
    images = [_photo(samples, "obama.jpg"), _photo(samples, "obama3.jpg")]
    first = service.enroll(gallery, "obama", images)
    again = service.enroll(gallery, "obama", images)
    assert [o.template_id for o in first.outcomes] == [o.template_id for o in again.outcomes]
    assert service.stats(gallery).templates == 2


def test_duplicate_identity_warns_or_refuses(
    service: FaceService, samples: Samples, gallery: str
) -> None:
    service.enroll(gallery, "obama", [_photo(samples, "obama.jpg")])
    warned = service.enroll(gallery, "impostor", [_photo(samples, "obama2.jpg")])
    assert warned.enrolled == 1
    assert any("duplicate_identity" in w and "'obama'" in w for w in warned.outcomes[0].warnings)
    policy = service.settings.matching
    service.settings.matching = policy.model_copy(update={"duplicate_identity": "refuse"})
    try:
        refused = service.enroll(gallery, "impostor2", [_photo(samples, "obama3.jpg")])
    finally:
        service.settings.matching = policy
    assert refused.enrolled == 0 and refused.outcomes[0].reason == "duplicate_identity"
    assert service.gallery.templates(gallery, "impostor2") == []


def test_a_self_calibrated_gallery_decides_on_the_lead_over_the_cohort(
    service: FaceService, samples: Samples, gallery: str
) -> None:
    """Past min_false_positives / FPIR templates identify decides on the cohort gap (the
    default statistic): the answer's decision score is the best user's score minus the mean
    of the next nine users', whatever top_k is, and the duplicate check uses it too."""
    rng = np.random.default_rng(11)
    dim = service.gallery.dimension
    filler = {}
    for u in range(300):  # 1,200 unrelated templates: unit vectors, as embeddings are
        vectors = rng.normal(size=(4, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        filler[f"filler{u}"] = [
            NewTemplate(f"{u:04x}{i:02x}" + "0" * 26, v, 1.0, "synthetic")
            for i, v in enumerate(vectors)
        ]
    service.gallery.add_many(gallery, filler)
    service.enroll(gallery, "obama", [_photo(samples, "obama.jpg"), _photo(samples, "obama3.jpg")])
    probe = samples.photo("obama2.jpg").read_bytes()
    wide = service.identify_batch(gallery, [probe], top_k=10)
    point = wide.operating_point
    assert (point.method, point.statistic) == ("self_calibrated", "cohort_gap")
    face = wide.images[0][0]
    scores = [c.score for c in face.candidates]
    assert len(scores) == 10 and face.decision == "obama"
    assert face.decision_score == pytest.approx(scores[0] - np.mean(scores[1:]), abs=1e-6)
    assert face.decision_score is not None and face.decision_score >= point.threshold
    narrow = service.identify(gallery, probe, top_k=1)[0]
    assert len(narrow.candidates) == 1 and narrow.decision_score == pytest.approx(
        face.decision_score, abs=1e-6
    )
    assert "decision score" in narrow.describe()
    stranger = service.identify(gallery, samples.photo("grace_hopper.jpg").read_bytes())[0]
    assert stranger.decision == "unknown"
    assert stranger.decision_score is not None and stranger.decision_score < point.threshold
    warned = service.enroll(gallery, "impostor", [_photo(samples, "obama2.jpg")])
    assert any("'obama' (cohort_gap" in w for w in warned.outcomes[0].warnings)


def test_template_cap(service: FaceService, samples: Samples, gallery: str) -> None:
    orl = [ImageInput(f"{k}.pgm", read_bgr(samples.orl / "s7" / f"{k}.pgm")) for k in range(1, 7)]
    cap = service.settings.gallery
    service.settings.gallery = cap.model_copy(update={"max_templates_per_user": 3})
    try:
        first = service.enroll(gallery, "s7", orl[:4])
        second = service.enroll(gallery, "s7", orl[4:])
    finally:
        service.settings.gallery = cap
    assert first.templates == 3 and second.templates == 3
    assert first.enrolled == 3 and [o.reason for o in first.outcomes].count("redundant") == 1
    stored = service.gallery.templates(gallery, "s7")
    assert len(stored) == 3
    assert set(second.evicted) <= {o.template_id for o in first.outcomes if o.enrolled}


def test_quality_failed_faces_are_not_searched(
    service: FaceService, samples: Samples, gallery: str
) -> None:
    service.enroll(gallery, "someone", [_photo(samples, "astronaut.png")])
    faces = service.identify(gallery, samples.photo("group.jpg").read_bytes())
    turned = [f for f in faces if not f.quality.passed]
    assert turned and all(not f.searched and not f.candidates for f in turned)
    assert all(f.decision == "unknown" for f in turned)
    assert all(f.searched for f in faces if f.quality.passed)


def test_delete_then_identify_no_longer_finds(
    service: FaceService, gallery: str, obama_enrolled: bytes
) -> None:
    probe = obama_enrolled
    assert service.delete_user(gallery, "obama") == 1
    assert service.identify(gallery, probe)[0].candidates == []
    with pytest.raises(NotFound):
        service.delete_user(gallery, "obama")
    with pytest.raises(NotFound, match="not enrolled"):
        service.verify(gallery, "obama", probe)


def test_clear_errors(service: FaceService, samples: Samples, gallery: str) -> None:
    service.enroll(gallery, "collins", [_photo(samples, "astronaut.png")])
    blank = encode(np.full((120, 120, 3), 200, np.uint8))
    with pytest.raises(InvalidInput, match="no face"):
        service.verify(gallery, "collins", blank)
    with pytest.raises(InvalidInput, match="invalid user id"):
        service.enroll(gallery, 'x" or "1"=="1', [_photo(samples, "obama.jpg")])
    with pytest.raises(InvalidInput, match="at least one image"):
        service.enroll(gallery, "nobody", [])
    with pytest.raises(InvalidInput, match="top_k"):
        service.identify(gallery, blank, top_k=0)
    assert service.identify(gallery, blank) == []


_PEAK_SCRIPT = """
import tracemalloc
import cv2, numpy as np
from facegallery.core.config import load_settings
from facegallery.service.face_service import FaceService
from facegallery.service.enrollment import ImageInput

service = FaceService.from_settings(load_settings())
ok, jpeg = cv2.imencode(".jpg", np.full((4000, 6000, 3), 128, np.uint8))  # 24 MP, 72 MB decoded
image = ImageInput("big.jpg", jpeg.tobytes())
service.enroll("peak", "u", [image])  # warm: one image decoded, the models loaded
tracemalloc.start()
result = service.enroll("peak", "u", [ImageInput(f"big-{i}.jpg", image.data) for i in range(8)])
assert [o.reason for o in result.outcomes] == ["no_face"] * 8, result.outcomes
print(tracemalloc.get_traced_memory()[1])
"""


@pytest.mark.slow
def test_an_enrollment_decodes_a_few_images_at_a_time(tmp_path: Path) -> None:
    """Eight 24-megapixel photos (small as JPEG, 72 MB each as pixels): the peak memory of
    an enrollment grows with decode.images_at_once, not with the job's size. The peak is
    tracemalloc's: numpy reports every array it allocates (decoded images, canvases) to it,
    so it is exact and the same on every kernel. The process's peak RSS is not: on one CI
    machine it had not grown at all after the warm-up, for either setting."""

    def peak_growth(at_once: int) -> int:
        env = {
            **os.environ,
            "FACEGALLERY_DECODE__IMAGES_AT_ONCE": str(at_once),
            "FACEGALLERY_GALLERY__URI": str(tmp_path / f"peak-{at_once}.db"),
        }
        run = subprocess.run(
            [sys.executable, "-c", _PEAK_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        return int(run.stdout.split()[-1])

    one_at_a_time, all_at_once = peak_growth(1), peak_growth(8)
    photo = 4000 * 6000 * 3
    # measured 109 MB: one decoded photo and its detection canvas (1920 px, float32)
    assert one_at_a_time < 2 * photo
    # measured 871 MB: eight decoded photos and eight canvases, what decoding them together costs
    assert all_at_once > 8 * photo
