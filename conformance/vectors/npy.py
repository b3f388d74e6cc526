"""A byte-stable `.npy` writer and a strict, pickle-free `.npy` reader.

We write the header ourselves instead of calling `np.save`: numpy has changed
its header padding between versions (extra spaces reserved for in-place growth),
and the committed vectors must regenerate byte-identically with any numpy. The
files are ordinary NPY 1.0 (little-endian, C order), so `np.load`, C++ `cnpy` or
Rust `npyz` read them unchanged.

The reader never unpickles: it parses the header as a literal, accepts only
plain numeric dtypes, and checks that the data is exactly as long as the header
says, so a truncated file is reported as truncated, not as a reshape error.
"""

from __future__ import annotations

import ast
import struct
from typing import Any, Literal

import numpy as np

MAGIC = b"\x93NUMPY"
ALIGN = 64
# The storage dtypes we write. bfloat16 has no npy descr: it is stored as its raw bits, '<u2'.
WRITE_DESCRS = ("<f2", "<f4", "<f8", "<i8", "<u2")


class NpyError(ValueError):
    """A file that is not a usable .npy (bad magic, unsafe dtype, truncated data)."""


def header_bytes(descr: str, shape: tuple[int, ...]) -> bytes:
    """NPY 1.0 header: magic, version, length, dict literal padded with spaces to a 64-byte boundary."""
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple(int(n) for n in shape)!r}, }}"
    pad = -(len(MAGIC) + 2 + 2 + len(text) + 1) % ALIGN
    text = text + " " * pad + "\n"
    return MAGIC + b"\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")


def npy_bytes(array: np.ndarray) -> bytes:
    """The complete file for `array`, whose dtype must be one of WRITE_DESCRS (after little-endian conversion)."""
    descr = np.dtype(array.dtype).newbyteorder("<").str
    if descr not in WRITE_DESCRS:
        raise NpyError(f"refusing to write dtype {array.dtype} (descr {descr}); allowed: {', '.join(WRITE_DESCRS)}")
    data = np.ascontiguousarray(array, dtype=np.dtype(descr)).tobytes(order="C")
    return header_bytes(descr, array.shape) + data


def parse_header(blob: bytes) -> tuple[dict[str, Any], int]:
    """(header dict, offset of the data). Versions 1.0, 2.0 and 3.0 are accepted."""
    if len(blob) < 10 or not blob.startswith(MAGIC):
        raise NpyError("not a .npy file (missing the \\x93NUMPY magic)")
    major = blob[6]
    if major == 1:
        (length,), start = struct.unpack("<H", blob[8:10]), 10
    elif major in (2, 3) and len(blob) >= 12:
        (length,), start = struct.unpack("<I", blob[8:12]), 12
    else:
        raise NpyError(f"unsupported .npy version {major}.{blob[7]}")
    if len(blob) < start + length:
        raise NpyError(f"truncated: header says {length} header bytes, file has {len(blob) - start}")
    text = blob[start : start + length].decode("utf8" if major == 3 else "latin1")
    try:
        header = ast.literal_eval(text)  # literals only: nothing is executed or unpickled
    except (ValueError, SyntaxError):
        raise NpyError(f"unreadable .npy header {text.strip()!r}") from None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise NpyError(f"malformed .npy header {text.strip()!r}")
    shape = header["shape"]
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise NpyError(f"malformed .npy shape {shape!r}")
    return header, start + length


def read_npy(blob: bytes) -> np.ndarray:
    """Decode a .npy file's bytes; only plain bool/int/uint/float dtypes, never pickled objects."""
    header, offset = parse_header(blob)
    descr = header["descr"]
    try:
        dtype = np.dtype(descr) if isinstance(descr, str) else None
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
        raise NpyError(f"refusing dtype {descr!r}: only plain numeric arrays are read (never pickled objects)")
    shape = header["shape"]
    want = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    have = len(blob) - offset
    if have < want:
        raise NpyError(f"truncated: shape {shape} of {dtype.str} needs {want} data bytes, file has {have}")
    if have > want:
        raise NpyError(f"{have - want} unexpected bytes after the data of shape {shape}")
    order: Literal["C", "F"] = "F" if header["fortran_order"] else "C"
    flat = np.frombuffer(blob, dtype=dtype, offset=offset, count=want // dtype.itemsize)
    return np.ascontiguousarray(flat.reshape(tuple(shape), order=order).astype(dtype.newbyteorder("=")))
