"""Verification pair lists: our CSV (``img_a,img_b,same[,fold]``) and LFW's ``pairs.txt``.

Folds must be identity-disjoint, or a threshold is tuned on the very people it is tested on.
LFW's View 2 folds are (its ten sets are in file order); a CSV without a fold column gets ten
folds built from the identity graph (an identity is an image's folder).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from facegallery.core.errors import InvalidInput

N_FOLDS = 10


@dataclass(frozen=True)
class Pair:
    """Two images (paths relative to the data root) and whether they show the same person."""

    img_a: str
    img_b: str
    same: bool
    fold: int  # -1: in no fold (see identity_disjoint_folds)


def read_pairs(path: Path) -> list[Pair]:
    """Pairs from a CSV with a header, or an LFW ``pairs.txt`` (View 2)."""
    if not path.is_file():
        raise InvalidInput(f"pairs file {path} does not exist")
    text = path.read_text()
    first = text.splitlines()[0] if text else ""
    if first.replace(" ", "").startswith("img_a,img_b,same"):
        return _read_csv(path)
    return _read_lfw(path, text)


def _read_csv(path: Path) -> list[Pair]:
    rows = []
    with path.open(newline="") as fh:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            try:
                same = int(row["same"])
                fold = int(row["fold"]) if row.get("fold") not in (None, "") else -1
            except (KeyError, ValueError) as exc:
                raise InvalidInput(f"{path}:{line}: bad row {row}: {exc}") from exc
            if same not in (0, 1):
                raise InvalidInput(f"{path}:{line}: 'same' must be 0 or 1, got {same}")
            if fold < -1 or (fold == -1 and row.get("fold")):
                raise InvalidInput(f"{path}:{line}: fold must be 0 or more, got {fold}")
            rows.append(Pair(row["img_a"], row["img_b"], bool(same), fold))
    if not rows:
        raise InvalidInput(f"{path} has no pairs")
    if all(p.fold < 0 for p in rows):
        return identity_disjoint_folds(rows)
    if any(p.fold < 0 for p in rows):
        raise InvalidInput(f"{path}: either every row has a fold or none does")
    return rows


def _read_lfw(path: Path, text: str) -> list[Pair]:
    lines = [ln.split() for ln in text.splitlines() if ln.strip()]
    try:
        n_folds, per_class = int(lines[0][0]), int(lines[0][-1])
    except (IndexError, ValueError) as exc:
        raise InvalidInput(
            f"{path} is neither a CSV with header img_a,img_b,same[,fold] nor an LFW pairs.txt"
        ) from exc
    body = lines[1:]
    if len(body) != n_folds * 2 * per_class:
        raise InvalidInput(
            f"{path}: header promises {n_folds} folds of {2 * per_class} pairs, "
            f"found {len(body)} pairs"
        )
    pairs = []
    for i, fields in enumerate(body):
        if len(fields) == 3:
            name, a, b = fields
            pairs.append(Pair(_lfw_path(name, a), _lfw_path(name, b), True, i // (2 * per_class)))
        elif len(fields) == 4:
            name_a, a, name_b, b = fields
            pairs.append(
                Pair(_lfw_path(name_a, a), _lfw_path(name_b, b), False, i // (2 * per_class))
            )
        else:
            raise InvalidInput(f"{path}:{i + 2}: expected 3 or 4 fields, got {fields}")
    return pairs


def _lfw_path(name: str, number: str) -> str:
    return f"{name}/{name}_{int(number):04d}.jpg"


def identity_disjoint_folds(pairs: list[Pair], n_folds: int = N_FOLDS) -> list[Pair]:
    """Assign every identity to one of ``n_folds`` folds, and each pair to its identities' fold.

    Identities linked by pairs are kept together: whole connected groups when there are at
    least ``n_folds`` of them (then every pair lands in a fold), else identity by identity,
    each to the fold it shares most pairs with among those with room. A pair between two
    folds' identities gets fold -1: it still counts for AUC and TAR@FAR, but the 10-fold
    accuracy leaves it out, so no identity is ever on both sides of a threshold choice.
    """
    groups = _linked_groups(pairs)
    units = groups if len(groups) >= n_folds else [[i] for g in groups for i in g]
    weight = {i: 0 for unit in units for i in unit}
    links: dict[str, dict[str, int]] = {i: {} for i in weight}
    for p in pairs:
        a, b = _identity(p.img_a), _identity(p.img_b)
        weight[a] += 1
        links[a][b] = links[a].get(b, 0) + 1
        links[b][a] = links[b].get(a, 0) + 1
    capacity = 1.1 * sum(weight.values()) / n_folds
    loads = [0] * n_folds
    fold_of: dict[str, int] = {}
    for unit in sorted(units, key=lambda u: -sum(weight[i] for i in u)):
        size = sum(weight[i] for i in unit)
        shared = [0] * n_folds
        for identity in unit:
            for other, count in links[identity].items():
                if other in fold_of:
                    shared[fold_of[other]] += count
        open_folds = [f for f in range(n_folds) if loads[f] + size <= capacity] or range(n_folds)
        fold = max(open_folds, key=lambda f: (shared[f], -loads[f]))
        loads[fold] += size
        fold_of.update((i, fold) for i in unit)
    out = []
    for p in pairs:
        fold_a, fold_b = fold_of[_identity(p.img_a)], fold_of[_identity(p.img_b)]
        out.append(Pair(p.img_a, p.img_b, p.same, fold_a if fold_a == fold_b else -1))
    if len({p.fold for p in out} - {-1}) < n_folds:
        raise InvalidInput(
            f"the pairs cover too few identities for {n_folds} identity-disjoint folds: "
            "add a fold column"
        )
    return out


def _linked_groups(pairs: list[Pair]) -> list[list[str]]:
    """Identities grouped into the connected components of the pair graph."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for p in pairs:
        parent[find(_identity(p.img_a))] = find(_identity(p.img_b))
    groups: dict[str, list[str]] = {}
    for identity in list(parent):
        groups.setdefault(find(identity), []).append(identity)
    return list(groups.values())


def _identity(image: str) -> str:
    return str(Path(image).parent)
