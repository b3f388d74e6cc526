"""Converted TFLite models on disk: convert a case once, load its flatbuffer in every later run.

Why: the TFLite adapter bakes the case's weights into the model, as a deployed model has them,
so every case is one trace and one conversion (a fraction of a second to seconds each), and
a warm run repeated all of them. The inputs of a conversion are deterministic (weights come
from numpy seeds), so its output can be kept: the key holds the weights' bytes, the structure
and trace shape, the converter setting, the versions of tensorflow, keras and ai-edge-litert,
and a digest of the adapter's own source files, so an upgrade, an edit or other weights can
never load a stale model. A converter's refusal is kept too (its message, quoted as before).
Files: `<cache>/tflite/<conversion>/<key>.tflite` or `<key>.refused`.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from conformance.cache import cache_root

FORMAT_VERSION = 1  # bump when what is stored (or how it is made) changes
PACKAGES = ("tensorflow", "keras", "ai-edge-litert")
SOURCES = (
    Path(__file__).with_name("tflite.py"),
    Path(__file__).with_name("keras_common.py"),
    Path(__file__).parent / "converters" / "keras_gru.py",
    Path(__file__),
)


def _installed(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "absent"


def model_key(parts: dict[str, Any], tensors: dict[str, np.ndarray]) -> str:
    """A digest of everything a conversion depends on: `parts` (structure, trace shape, setting) and the weights."""
    digest = hashlib.sha256()
    versions = {p: _installed(p) for p in PACKAGES}
    digest.update(json.dumps([FORMAT_VERSION, parts, versions], sort_keys=True, default=list).encode())
    for path in SOURCES:
        digest.update(path.read_bytes())
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:32]


class FlatbufferStore:
    """`<root>/<conversion>/<key>.tflite` (the model) or `.refused` (the converter's message), written atomically."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else cache_root() / "tflite"

    def _path(self, conversion: str, key: str, suffix: str) -> Path:
        return self.root / conversion / f"{key}{suffix}"

    def load(self, conversion: str, key: str) -> bytes | str | None:
        """The stored model (bytes), the stored refusal (str), or None when neither is stored."""
        try:
            return self._path(conversion, key, ".tflite").read_bytes()
        except OSError:
            pass
        try:
            return self._path(conversion, key, ".refused").read_text(encoding="utf-8")
        except OSError:
            return None

    def save(self, conversion: str, key: str, outcome: bytes | str) -> None:
        path = self._path(conversion, key, ".tflite" if isinstance(outcome, bytes) else ".refused")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(outcome if isinstance(outcome, bytes) else outcome.encode("utf-8"))
            tmp.replace(path)
        except OSError:
            pass  # a read-only or full cache costs the next run a conversion, nothing else
