"""MATLAB v5 .mat files (SVHN's images, SBD's masks): read by scipy once a structural check of ours passes.

scipy's reader (1.17) looks the type of each data element up in a C table without checking that the type is
one it knows: a damaged type byte, or a complex flag whose imaginary part is not there (the next variable's
header is then read as data), makes it follow a wild pointer and the process dies with a segmentation fault
(measured: 15 of 2,700 single-byte flips in the first 300 bytes of a small SVHN file). `read_mat` first walks
the file in the order scipy reads it and refuses, with the reason, what would lead there, so scipy only ever
reads files whose elements all have types it knows, which it reads or refuses with an exception.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from pathlib import Path
from typing import Any

# Element types (miINT8 ...) whose data scipy reads as an array: numbers, and UTF-8/16/32 text.
_DATA_TYPES = {1, 2, 3, 4, 5, 6, 7, 9, 12, 13, 16, 17, 18}
_INT8, _INT32, _UINT32, _MATRIX, _COMPRESSED, _UTF8 = 1, 5, 6, 14, 15, 16
# Array classes (mxCELL_CLASS ...) read here: cell, struct, object, char, sparse and the numeric ones
# (function handles and opaque objects are not in the datasets read, and scipy reads the latter unsafely).
_CELL, _STRUCT, _OBJECT, _CHAR, _SPARSE = 1, 2, 3, 4, 5
_NUMERIC = range(6, 16)
_MAX_DEPTH = 32


class MatFileError(ValueError):
    """A file that is no MATLAB v5 file scipy can read safely; the message says why, in one line."""


class _Stream:
    """Bytes read in order, as scipy's stream over a file or a decompressed variable."""

    def __init__(self, data: bytes, pos: int, order: str) -> None:
        self.data, self.pos, self.order = data, pos, order

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise MatFileError(f"truncated: {n} bytes needed at byte {self.pos}, {len(self.data) - self.pos} left")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u4s(self) -> tuple[int, int]:
        return struct.unpack(f"{self.order}II", self.take(8))

    def element(self) -> tuple[int, bytes]:
        """An element's type and data, small (data in the tag) or full (then padded to 8 bytes)."""
        mdtype, count = self.u4s()
        if mdtype >> 16:  # small data element: the byte count in the upper half of the type
            if mdtype >> 16 > 4:
                raise MatFileError(f"a small element at byte {self.pos - 8} claims {mdtype >> 16} bytes")
            return mdtype & 0xFFFF, struct.pack(f"{self.order}I", count)[: mdtype >> 16]
        data = self.take(count)
        self.pos = min(self.pos + (-count) % 8, len(self.data))
        return mdtype, data


def _data(s: _Stream, what: str) -> bytes:
    mdtype, data = s.element()
    if mdtype not in _DATA_TYPES:
        raise MatFileError(f"{what} at byte {s.pos - len(data)} has element type {mdtype}, not a data type")
    return data


def _int32s(s: _Stream, max_bytes: int, what: str) -> list[int]:
    mdtype, data = s.element()
    if mdtype not in (_INT32, _UINT32) or len(data) > max_bytes or len(data) % 4:
        raise MatFileError(f"{what} is no list of int32 (element type {mdtype}, {len(data)} bytes)")
    return list(struct.unpack(f"{s.order}{len(data) // 4}i", data))


def _name(s: _Stream, what: str) -> bytes:
    mdtype, data = s.element()
    if mdtype not in (_INT8, _UTF8):
        raise MatFileError(f"{what} has element type {mdtype}, not text")
    return data


def _matrix(s: _Stream, depth: int) -> None:
    """One array after its miMATRIX tag, read in the order of scipy's VarReader5 (read_header, then
    array_from_header); nested arrays (cells, struct fields) in turn."""
    if depth > _MAX_DEPTH:
        raise MatFileError(f"arrays nested more than {_MAX_DEPTH} deep")
    _, flags, _ = struct.unpack(f"{s.order}8sII", s.take(16))  # the flags' tag, flags and class, nzmax
    mclass, is_complex = flags & 0xFF, flags >> 11 & 1
    if mclass not in (_CELL, _STRUCT, _OBJECT, _CHAR, _SPARSE, *_NUMERIC):
        raise MatFileError(f"an array at byte {s.pos - 16} has class {mclass}, which is not read here")
    dims = _int32s(s, 128, "an array's dimensions")
    if len(dims) < 2 or any(d < 0 for d in dims):  # MATLAB writes 2 or more; scipy's text reader needs 1
        raise MatFileError(f"an array has dimensions {dims}, not two or more sizes")
    size = math.prod(dims)
    _name(s, "an array's name")
    if mclass in _NUMERIC:
        for part in range(1 + is_complex):
            _data(s, "the imaginary part of an array" if part else "an array's values")
    elif mclass == _SPARSE:
        for what in ("row indices", "column starts", *["values"] * (1 + is_complex)):
            _data(s, f"a sparse array's {what}")
    elif mclass == _CHAR:
        if not _data(s, "a text array") and size > 1 << 20:
            raise MatFileError(f"an empty text array claims {size} characters")
    else:
        fields = 1
        if mclass != _CELL:
            if mclass == _OBJECT:
                _name(s, "an object's class name")
            (length, *rest) = _int32s(s, 4, "a struct's field name length") or [0]
            if rest or length <= 0:
                raise MatFileError(f"a struct has field names of length {length}")
            fields = len(_name(s, "a struct's field names")) // length
        if size * fields * 8 > len(s.data) - s.pos:
            raise MatFileError(f"an array of {size} x {fields} elements does not fit in the rest of the file")
        for _ in range(size * fields):
            mdtype, count = s.u4s()
            if mdtype != _MATRIX:
                raise MatFileError(f"an element of a cell or struct at byte {s.pos - 8} has type {mdtype}")
            if count:
                _matrix(s, depth + 1)


def check_mat5(data: bytes) -> None:
    """Refuse (MatFileError) a file scipy would not read as MATLAB v5, or would read unsafely."""
    if len(data) < 128:
        raise MatFileError(f"{len(data)} bytes, shorter than a MAT-file header")
    if 0 in data[:4] or data[126:128] not in (b"IM", b"MI"):
        raise MatFileError("no MATLAB v5 header (the first 128 bytes)")
    order = "<" if data[126:128] == b"IM" else ">"
    if struct.unpack(f"{order}H", data[124:126])[0] != 0x0100:
        raise MatFileError("a MAT-file header of another version than 5")
    pos = 128
    while pos < len(data):
        mdtype, count = _Stream(data, pos, order).u4s()
        if count == 0 or mdtype not in (_MATRIX, _COMPRESSED):
            raise MatFileError(f"the variable at byte {pos} has element type {mdtype} and {count} bytes")
        if mdtype == _COMPRESSED:
            if pos + 8 + count > len(data):
                raise MatFileError(f"the compressed variable at byte {pos} ends past the end of the file")
            try:
                inner = _Stream(zlib.decompress(data[pos + 8 : pos + 8 + count]), 0, order)
            except zlib.error as err:
                raise MatFileError(f"the compressed variable at byte {pos} is damaged ({err})") from None
            if inner.u4s()[0] != _MATRIX:
                raise MatFileError(f"the compressed variable at byte {pos} holds no array")
            _matrix(inner, 0)
        else:
            _matrix(_Stream(data, pos + 8, order), 0)
        pos += 8 + count


def read_mat(path: Path) -> dict[str, Any]:
    """scipy.io.loadmat of a MATLAB v5 file that passed check_mat5; MatFileError if it did not, or any
    exception scipy raises on what is still wrong."""
    from scipy.io import loadmat

    data = path.read_bytes()
    check_mat5(data)
    return loadmat(io.BytesIO(data))
