"""The per-user template cap keeps the best-quality, most diverse templates."""

from __future__ import annotations

import numpy as np

from facegallery.gallery import Template
from facegallery.gallery.policy import templates_to_keep


def _t(name: str, vector: list[float], quality: float) -> Template:
    v = np.asarray(vector, np.float32)
    return Template(name, "u", v / np.linalg.norm(v), quality, name, 0)


def test_under_the_cap_everything_stays() -> None:
    templates = [_t("a", [1, 0, 0], 0.5), _t("b", [0, 1, 0], 0.6)]
    assert templates_to_keep(templates, 3) == templates


def test_best_quality_first_then_diversity() -> None:
    best = _t("best", [1, 0, 0], 0.9)
    near_copy = _t("near-copy", [1, 0.05, 0], 0.85)  # good but almost the same picture
    other_angle = _t("other-angle", [0.3, 1, 0], 0.7)
    poor = _t("poor", [0, 0, 1], 0.1)
    kept = templates_to_keep([near_copy, poor, other_angle, best], 2)
    assert [t.template_id for t in kept] == ["best", "other-angle"]


def test_quality_still_matters_among_diverse() -> None:
    templates = [_t("low", [0, 1, 0], 0.2), _t("high", [0, 0, 1], 0.8), _t("top", [1, 0, 0], 0.95)]
    assert [t.template_id for t in templates_to_keep(templates, 2)] == ["top", "high"]
