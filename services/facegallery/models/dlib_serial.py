"""dlib's serialization (``dlib/serialize.h``), read in order from one byte string: what both
of dlib's published model files the project converts are written in.

An integer is a control byte (0x80: negative; low four bits: how many little-endian bytes
follow); a float is two integers, mantissa then exponent; a string its length then its bytes;
a bool an ASCII '0' / '1'; a ``std::vector`` its length then its items; a ``matrix`` its rows
and columns, negated, then its items row by row; a DNN tensor its version (2), four dimensions
and that many little-endian float32. Every read checks what it finds, so a file that is not
the expected model is refused with the byte where it stopped, not turned into a wrong model.
"""

from __future__ import annotations

import math

import numpy as np

from facegallery.core.errors import FailedPrecondition


class DlibReader:
    """dlib's serialized primitives, read in order; ``what`` names the expected file in
    errors."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.at, self.what = data, 0, what

    def integer(self) -> int:
        control = self._take(1)[0]
        count = control & 0x0F
        if not 1 <= count <= 8:
            raise self.error(f"an integer's control byte {control:#x}")
        value = int.from_bytes(self._take(count), "little")
        return -value if control & 0x80 else value

    def count(self, most: int) -> int:
        """A length or index: an integer in [0, most]."""
        value = self.integer()
        if not 0 <= value <= most:
            raise self.error(f"a count {value} (at most {most} expected)")
        return value

    def real(self) -> float:
        mantissa, exponent = self.integer(), self.integer()
        if exponent >= 32000:  # dlib's infinities and NaN
            return {32000: float("inf"), 32001: float("-inf")}.get(exponent, float("nan"))
        try:
            return math.ldexp(float(mantissa), exponent)
        except OverflowError:
            raise self.error(f"a float of exponent {exponent}") from None

    def text(self) -> str:
        return self._take(self.integer()).decode("latin-1")

    def flag(self) -> bool:
        value = self._take(1)
        if value not in (b"0", b"1"):
            raise self.error(f"a bool {value!r}")
        return value == b"1"

    def column(self) -> np.ndarray:
        """A ``matrix<float,0,1>``: its rows and one column, negated, then its values."""
        rows, cols = -self.integer(), -self.integer()
        if cols != 1 or not 0 <= rows <= len(self.data) - self.at:
            raise self.error(f"a column of {rows}x{cols}")
        values = np.array([self.real() for _ in range(rows)], dtype=np.float64)
        if not np.all(np.abs(values) <= np.finfo(np.float32).max):
            raise self.error("a value out of float32's range")
        return values.astype(np.float32)

    def tensor(self) -> np.ndarray:
        if (version := self.integer()) != 2:
            raise self.error(f"tensor version {version}")
        shape = tuple(self.integer() for _ in range(4))
        if min(shape) < 0:
            raise self.error(f"tensor dimensions {shape}")
        count = math.prod(shape)
        return np.frombuffer(self._take(4 * count), dtype="<f4").reshape(shape).copy()

    def skip_reals(self, count: int) -> None:
        for _ in range(count):
            self.real()

    def skip_aliases(self, count: int) -> None:
        """Views of a layer's parameters (their shapes only): nothing to keep."""
        for _ in range(count):
            if (version := self.integer()) != 1:
                raise self.error(f"alias tensor version {version}")
            for _ in range(4):
                self.integer()

    def end(self) -> None:
        """Refuse bytes after the model: a file with more in it is not the expected one."""
        if self.at != len(self.data):
            raise self.error(f"{len(self.data) - self.at} bytes after the model")

    def _take(self, count: int) -> bytes:
        if count < 0 or self.at + count > len(self.data):
            raise self.error("the end of the file")
        chunk = self.data[self.at : self.at + count]
        self.at += count
        return chunk

    def error(self, what: str) -> FailedPrecondition:
        return FailedPrecondition(f"not {self.what}: unexpected {what} at byte {self.at}")
