"""The human wording of the answers, shared by the server (its own reports) and every client
(the command line prints it whichever transport brought the answer), so the same decision
reads the same everywhere."""

from __future__ import annotations

UNKNOWN = "unknown"
"""The decision for a face that matches nobody in the gallery."""
SCORE = "score"
"""The decision statistic that is the best candidate's score itself (no cohort)."""


def rounded_score(value: float | None) -> float | None:
    """A score as answers carry it (6 decimals), or None."""
    return None if value is None else round(value, 6)


def describe_decision(
    searched: bool,
    reasons: list[str],
    best: tuple[str, float] | None,
    decision: str,
    decision_score: float | None = None,
) -> str:
    """The phrase for one identified face; the decision score is named where it is not the
    best score itself (a cohort gap)."""
    if not searched:
        return "not searched: " + ", ".join(reasons)
    if best is None:
        return "unknown (the gallery is empty)"
    gap = ""
    if decision_score is not None and round(decision_score, 6) != round(best[1], 6):
        gap = f", decision score {decision_score:.3f}"
    if decision != UNKNOWN:
        return f"{decision} (score {best[1]:.3f}{gap})"
    return f"unknown (closest {best[0]} at {best[1]:.3f}{gap})"


def describe_operating_point(
    statistic: str, threshold: float, method: str, target_fpir: float | None, gallery_users: int
) -> str:
    """The phrase for the threshold an identification used, and why."""
    on = "" if statistic == SCORE else f"{statistic} "
    if target_fpir is None:
        return f"{on}threshold {threshold:.3f} ({method})"
    return (
        f"{on}threshold {threshold:.3f} ({method} for FPIR {target_fpir:g} "
        f"at {gallery_users} users)"
    )
