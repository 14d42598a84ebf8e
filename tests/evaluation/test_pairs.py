"""Pair lists: CSV with and without folds, LFW pairs.txt, identity-disjoint folds."""

from __future__ import annotations

from pathlib import Path

import pytest

from facegallery.core.errors import InvalidInput
from facegallery.evaluation.pairs import identity_disjoint_folds, read_pairs


def test_csv_with_folds(tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text("img_a,img_b,same,fold\na/1.jpg,a/2.jpg,1,3\na/1.jpg,b/1.jpg,0,3\n")
    pairs = read_pairs(path)
    assert [(p.same, p.fold) for p in pairs] == [(True, 3), (False, 3)]


def test_csv_without_folds_gets_identity_disjoint_folds(tmp_path: Path) -> None:
    lines = ["img_a,img_b,same"]
    for person in range(24):
        lines.append(f"p{person}/1.png,p{person}/2.png,1")
        lines.append(f"p{person}/1.png,p{(person + 1) % 24 if person % 2 == 0 else person}/3.png,0")
    path = tmp_path / "pairs.csv"
    path.write_text("\n".join(lines) + "\n")
    pairs = read_pairs(path)
    folds_of: dict[str, set[int]] = {}
    for p in pairs:
        if p.fold >= 0:
            for image in (p.img_a, p.img_b):
                folds_of.setdefault(image.split("/")[0], set()).add(p.fold)
    assert all(len(f) == 1 for f in folds_of.values())  # no identity in two folds
    assert len({p.fold for p in pairs} - {-1}) == 10
    assert all(p.fold >= 0 for p in pairs if p.same)  # genuine pairs are never left out
    assert sum(p.fold == -1 for p in pairs) <= 12  # linked identities are kept together


def test_separate_groups_lose_no_pair() -> None:
    from facegallery.evaluation.pairs import Pair

    pairs = [Pair(f"p{i}/1.png", f"q{i}/1.png", False, -1) for i in range(30)]
    assert all(p.fold >= 0 for p in identity_disjoint_folds(pairs))


def test_too_few_identities_for_ten_folds(tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text("img_a,img_b,same\na/1.jpg,a/2.jpg,1\na/1.jpg,b/1.jpg,0\n")
    with pytest.raises(InvalidInput, match="add a fold column"):
        read_pairs(path)


def test_lfw_pairs_txt(tmp_path: Path) -> None:
    path = tmp_path / "pairs.txt"
    body = []
    for fold in range(2):
        body += [f"Person_{fold}\t1\t4"]
        body += [f"Person_{fold}\t2\tOther_{fold}\t13"]
    path.write_text("2\t1\n" + "\n".join(body) + "\n")
    pairs = read_pairs(path)
    assert (
        pairs[0].img_a == "Person_0/Person_0_0001.jpg"
        and pairs[0].img_b == "Person_0/Person_0_0004.jpg"
    )
    assert pairs[1].img_b == "Other_0/Other_0_0013.jpg" and not pairs[1].same
    assert [p.fold for p in pairs] == [0, 0, 1, 1]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("img_a,img_b,same\na.jpg,b.jpg,2\n", "must be 0 or 1"),
        ("img_a,img_b,same\na.jpg,b.jpg,yes\n", "bad row"),
        ("img_a,img_b,same\n", "no pairs"),
        ("img_a,img_b,same,fold\na/1,a/2,1,1\na/1,b/1,0,\n", "every row has a fold"),
        ("img_a,img_b,same,fold\na/1,a/2,1,-3\n", "fold must be 0 or more"),
        ("10\t300\nJohn\t1\t2\n", "header promises"),
        ("hello world\n", "neither a CSV"),
    ],
)
def test_bad_files_are_explained(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text(content)
    with pytest.raises(InvalidInput, match=message):
        read_pairs(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        read_pairs(tmp_path / "nope.csv")


def test_fold_sizes_are_balanced() -> None:
    from facegallery.evaluation.pairs import Pair

    pairs = [Pair(f"p{i}/1.png", f"p{i}/2.png", True, -1) for i in range(100)]
    sizes = [0] * 10
    for p in identity_disjoint_folds(pairs):
        sizes[p.fold] += 1
    assert sizes == [10] * 10
