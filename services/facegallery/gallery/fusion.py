"""Template fusion: one score per user from the user's set of templates.

``max`` scores a user by their best template. ``top2_mean`` scores them by the mean of their
two best templates (the one template's score for a user holding one): a stranger who
happens to resemble one photo of a user rarely resembles a second, while the user's own
new photo resembles several. Measured by ``benchmarks/bench_openset.py`` at the same FPIR,
it misses fewer mates than ``max``, by more as the gallery grows.

The search retrieves templates (the ``limit`` best, best first), groups them by user and
takes the ``shortlist`` users with the best templates; only they are fused, and the fused
scores rank them. A user with two templates among the retrieved ones is fused exactly from
them (any template of theirs not retrieved scores lower). A shortlisted user with one, when
the retrieval was cut at ``limit``, may hold others below the cut: their templates are read
(one query per batch, at most ``shortlist`` users per probe) and scored here. A user outside
the shortlist is not fused: a stranger's best fused score can then be a little low, a mate's
not (their best template puts them on the shortlist). Identify and the self-calibration
search with the same shortlist, so the operating point is measured on the scores identify
really computes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX = "max"


@dataclass(frozen=True)
class Candidate:
    """A user returned by a search: ``score`` is the user's fused score (``gallery.fusion``),
    ``template_id`` their best template."""

    user_id: str
    score: float
    template_id: str


def best_template(hits: list[dict[str, Any]], top_k: int) -> list[Candidate]:
    """``max``: each user's best hit, best users first, at most ``top_k``."""
    users = list(_by_user(hits).items())[:top_k]
    return [Candidate(user, scores[0][0], scores[0][1]) for user, scores in users]


def user_score(scores: np.ndarray, fusion: str) -> float:
    """One user's score from their templates' cosines to a probe, as a search fuses them:
    what verify reports, so a user and a photo get one score in identify and verify."""
    return float(np.max(scores)) if fusion == MAX else top_two_mean(scores)


def top_two_mean(scores: np.ndarray) -> float:
    """The mean of the two highest scores, or the one score."""
    if len(scores) == 1:
        return float(scores[0])
    two = np.partition(scores, len(scores) - 2)[-2:]
    return float(two.mean())


def fuse_top_two(
    results: list[list[dict[str, Any]]],
    probes: np.ndarray,
    limit: int,
    top_k: int,
    shortlist: int,
    read_templates: Callable[[set[str]], dict[str, np.ndarray]],
) -> list[list[Candidate]]:
    """``top2_mean`` for each probe's retrieved hits, over its ``shortlist`` best users by
    their best template; ``read_templates(users)``: each user's template embeddings (n, D),
    for the shortlisted users whose second template was not retrieved."""
    grouped = [dict(list(_by_user(hits).items())[:shortlist]) for hits in results]
    unread = {
        user
        for hits, users in zip(results, grouped, strict=True)
        if len(hits) >= limit
        for user, scores in users.items()
        if len(scores) == 1
    }
    templates = read_templates(unread) if unread else {}
    fused = []
    for probe, users in zip(probes, grouped, strict=True):
        candidates = []
        for user, scores in users.items():
            score = top_two_mean(np.array([s for s, _ in scores]))
            if len(scores) == 1 and user in templates:
                score = top_two_mean(templates[user] @ probe)
            candidates.append(Candidate(user, score, scores[0][1]))
        candidates.sort(key=lambda c: -c.score)
        fused.append(candidates[:top_k])
    return fused


def _by_user(hits: list[dict[str, Any]]) -> dict[str, list[tuple[float, str]]]:
    """Each retrieved user's (score, template id) pairs, best first."""
    users: dict[str, list[tuple[float, str]]] = {}
    for hit in sorted(hits, key=lambda h: -float(h["distance"])):
        entity = hit["entity"]
        users.setdefault(entity["user_id"], []).append(
            (float(hit["distance"]), entity["template_id"])
        )
    return users
