"""The worker protocol's frames: a JSON header, then arrays as `.npy` bytes. Nothing is pickled.

A frame is `u32 header length, header JSON, then for each array the header lists: u64 length,
.npy bytes`, all little-endian. Arrays cross as NPY 1.0 files written and read by
`conformance.vectors.npy` (the reader parses the header as a literal and accepts only plain
numeric dtypes), so a worker can't make the suite execute anything, and the suite can't make a
worker do so either. bfloat16 has no npy descr: it crosses as its uint16 bits, tagged
`bfloat16` in the header, as the portable vectors store it. Each array's read-only flag
crosses too: an out-of-process adapter gets exactly the arrays an in-process one gets.
"""

from __future__ import annotations

import json
import signal
import struct
from collections.abc import Mapping
from typing import Any, BinaryIO

import ml_dtypes
import numpy as np

from conformance.vectors.npy import NpyError, header_bytes, parse_header, read_npy

BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
WEIGHTS = "weights/"  # array names of the weights in a `run` frame: "weights/<state_dict name>"
WHERE_SIGNAL = signal.SIGUSR1  # asks a hung worker where it is: faulthandler prints its Python stack
MAX_HEADER = 1 << 24  # a header is a few hundred bytes; anything this long is a damaged stream


class WireError(ValueError):
    """A frame that can't be written (an array of a dtype that can't cross) or read (a damaged stream)."""


def array_bytes(array: np.ndarray) -> tuple[bytes, dict[str, Any]]:
    """(.npy bytes, its header entry) for a plain numeric or bfloat16 array."""
    tag = None
    if array.dtype == BFLOAT16:
        bits, tag = array.view(np.uint16), "bfloat16"
    elif array.dtype.kind in "biuf" and array.dtype.fields is None and array.dtype.subdtype is None:
        bits = array
    else:
        raise WireError(f"an array of dtype {array.dtype} can't cross the process boundary (plain numbers only)")
    descr = bits.dtype.newbyteorder("<").str
    data = np.ascontiguousarray(bits, dtype=np.dtype(descr)).tobytes(order="C")
    return header_bytes(descr, bits.shape) + data, {"dtype": tag, "writeable": bool(array.flags.writeable)}


def array_from(blob: bytes, entry: Mapping[str, Any]) -> np.ndarray:
    try:
        header, _ = parse_header(blob)
        array = read_npy(blob).reshape(header["shape"])  # read_npy gives a 0-d array one dimension
    except NpyError as error:
        raise WireError(f"array {entry.get('name')!r}: {error}") from None
    if entry.get("dtype") == "bfloat16":
        array = array.view(BFLOAT16)
    array.setflags(write=bool(entry.get("writeable", True)))
    return array


def encode(header: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None) -> bytes:
    """One frame: `header` (JSON-able) plus `arrays` by name; `header["arrays"]` is filled in here."""
    blobs, entries = [], []
    for name, array in (arrays or {}).items():
        blob, entry = array_bytes(np.asarray(array))
        blobs.append(blob)
        entries.append({"name": name, **entry})
    text = json.dumps({**header, "arrays": entries}, default=str).encode("utf-8")
    parts = [struct.pack("<I", len(text)), text]
    for blob in blobs:
        parts += [struct.pack("<Q", len(blob)), blob]
    return b"".join(parts)


def decode_header(blob: bytes) -> dict[str, Any]:
    try:
        header = json.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise WireError(f"unreadable frame header: {error}") from None
    if not isinstance(header, dict) or not isinstance(header.get("arrays", []), list):
        raise WireError(f"malformed frame header {blob[:80]!r}")
    return header


def read_frame(stream: BinaryIO) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    """The next frame from a blocking stream, or None at a clean end of stream (before any byte)."""
    head = stream.read(4)
    if not head:
        return None
    (length,) = struct.unpack("<I", _exact(stream, head, 4))
    if length > MAX_HEADER:
        raise WireError(f"frame header of {length} bytes: a damaged stream")
    header = decode_header(_exact(stream, stream.read(length), length))
    arrays = {}
    for entry in header.get("arrays", []):
        (size,) = struct.unpack("<Q", _exact(stream, stream.read(8), 8))
        arrays[str(entry["name"])] = array_from(_exact(stream, stream.read(size), size), entry)
    return header, arrays


def _exact(stream: BinaryIO, data: bytes, size: int) -> bytes:
    while len(data) < size:
        more = stream.read(size - len(data))
        if not more:
            raise WireError(f"stream ended inside a frame ({len(data)} of {size} bytes)")
        data += more
    return data
