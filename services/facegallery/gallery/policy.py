"""Which templates a user keeps when they have more than the cap.

The best-quality template first; then, one at a time, the template with the highest quality
minus ``redundancy`` times its cosine similarity to the closest template already kept (maximal
marginal relevance, Carbonell & Goldstein 1998). A near-copy of a kept template adds little for
recognition; a good photo from another angle or day adds the most.
"""

from __future__ import annotations

import numpy as np

from facegallery.gallery.store import Template

REDUNDANCY = 0.5


def templates_to_keep(templates: list[Template], cap: int) -> list[Template]:
    """At most ``cap`` templates, chosen for quality and diversity, in the order chosen."""
    if len(templates) <= cap:
        return list(templates)
    vectors = np.stack([t.embedding for t in templates])
    quality = np.array([t.quality for t in templates])
    chosen = [int(np.argmax(quality))]
    closest = vectors @ vectors[chosen[0]]
    while len(chosen) < cap:
        value = quality - REDUNDANCY * closest
        value[chosen] = -np.inf
        pick = int(np.argmax(value))
        chosen.append(pick)
        closest = np.maximum(closest, vectors @ vectors[pick])
    return [templates[i] for i in chosen]
