"""The domain's answers as the API's messages (``wire.schemas``). The wire schemas know
nothing of the server; this is the one place that knows both sides."""

from __future__ import annotations

from facegallery.decisions.openset import OperatingPoint
from facegallery.decisions.thresholds import Identification, Verification
from facegallery.gallery import User
from facegallery.jobs.queue import Job
from facegallery.vision.detect import Detection
from facegallery.vision.pipeline import Face
from facegallery.vision.quality import Quality
from facegallery.wire import schemas as s
from facegallery.wire.wording import rounded_score


def quality(q: Quality) -> s.Quality:
    view = q.to_dict()
    return s.Quality(**{k: view[k] for k in s.Quality.model_fields})


def face(detection: Detection, q: Quality) -> s.Face:
    x1, y1, x2, y2 = (round(float(v), 1) for v in detection.box)
    return s.Face(
        box=s.Box(x1=x1, y1=y1, x2=x2, y2=y2),
        landmarks=[
            s.Point(x=round(float(x), 1), y=round(float(y), 1)) for x, y in detection.landmarks
        ],
        detector_score=round(detection.score, 4),
        quality=quality(q),
    )


def identified_face(ident: Identification) -> s.IdentifiedFace:
    return s.IdentifiedFace(
        face=face(ident.detection, ident.quality),
        searched=ident.searched,
        candidates=[
            s.Candidate(user_id=c.user_id, score=round(c.score, 6)) for c in ident.candidates
        ],
        decision=ident.decision,
        decision_score=rounded_score(ident.decision_score),
    )


def detect_response(faces: list[Face], model_id: str) -> s.DetectResponse:
    return s.DetectResponse(faces=[face(f.detection, f.quality) for f in faces], model_id=model_id)


def operating_point(point: OperatingPoint) -> s.OperatingPoint:
    return s.OperatingPoint(**point.to_dict())


def verify_response(v: Verification) -> s.VerifyResponse:
    return s.VerifyResponse(
        gallery=v.gallery,
        user_id=v.user_id,
        score=round(v.score, 6),
        threshold=v.threshold,
        match=v.match,
        face=face(v.detection, v.quality),
        fusion=v.fusion,
    )


def job_view(job: Job) -> s.JobView:
    outcomes = [
        s.ImageOutcome(**{k: o.get(k) for k in s.ImageOutcome.model_fields if o.get(k) is not None})
        for o in job.outcomes
    ]
    return s.JobView(
        job_id=job.job_id,
        gallery=job.gallery,
        user_id=job.user_id,
        status=job.status,
        images=job.images,
        attempts=job.attempts,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        error=job.error,
        outcomes=outcomes,
        templates=int((job.result or {}).get("templates", 0)),
    )


def user(found: User) -> s.GetUserResponse:
    return s.GetUserResponse(
        user_id=found.user_id,
        templates=[
            s.Template(
                template_id=t.template_id,
                quality=t.quality,
                source=t.source,
                created_at=t.created_at,
            )
            for t in found.templates
        ],
        created_at=found.created_at,
        updated_at=found.updated_at,
    )
