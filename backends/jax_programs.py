"""Serialized JAX programs per signature: trace a library's GRU once, load it in every later process.

Why: with XLA's persistent compilation cache a second run compiles nothing, but it still
re-traces each library's Python (Flax's modules, Keras's layers) and re-lowers the program
in every new process, and that was most of a warm run's time. `jax.export` serializes the
traced, lowered program (StableHLO); a later process deserializes it, and compiling it hits
the persistent cache, so nothing of the library's Python runs again. It is the same
program: `tests/test_jax_backends.py` checks the loaded program's outputs are bit-identical
to the traced one's.

A program is stored per signature: adapter family, role (the forward program, or the
backward one: the vjp of the forward, what the gradient check runs), `Case.structure`,
(batch, seq_len), device platform and precision mode. Its key also holds the versions of jax, jaxlib and
the adapter's library and a digest of the adapter's own source files, so an upgrade or an
edit to an adapter can never load a stale program; the metadata repeats the signature and
is checked on load. Files: `<cache>/jax/programs/<family>/<key>.{bin,json}`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

FORMAT_VERSION = 2  # bump when what is stored (or how it is made) changes
FORWARD = "forward"  # (params leaves, x, h0, lengths) -> (output, h_n)
BACKWARD = "backward"  # (params leaves, x, h0, lengths, g_output, g_h_n) -> (d params leaves, d x[, d h0])


def versions(packages: tuple[str, ...]) -> dict[str, str]:
    """Installed versions (from package metadata: no import), part of every key."""
    found = {}
    for package in ("jax", "jaxlib", *packages):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "absent"
    return found


def source_digest(paths: tuple[Path, ...]) -> str:
    """A digest of the files that make a program (adapter, converter, shared JAX code)."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class ProgramSignature:
    """Everything a serialized program depends on; `key()` names its files."""

    family: str
    platform: str  # "cpu", "cuda"
    precision: str
    structure: tuple[Any, ...]
    batch: int
    seq_len: int
    versions: tuple[tuple[str, str], ...]
    sources: str
    role: str = FORWARD

    def key(self) -> str:
        text = json.dumps([FORMAT_VERSION, *asdict(self).values()], default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def as_json(self) -> Any:
        return json.loads(json.dumps(asdict(self), default=list))


@dataclass
class StoredProgram:
    """A loaded entry: the serialized program, the parameter tree it takes, and what building it took."""

    serialized: bytes
    params_tree: str  # str(treedef) of the parameter tree, checked before use
    build_s: float


class ProgramStore:
    """Serialized programs on disk (`<root>/<family>/<key>.{bin,json}`), written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _paths(self, sig: ProgramSignature) -> tuple[Path, Path]:
        base = self.root / sig.family / sig.key()
        return base.with_suffix(".json"), base.with_suffix(".bin")

    def has(self, sig: ProgramSignature) -> bool:
        return self._paths(sig)[0].exists()

    def load(self, sig: ProgramSignature) -> StoredProgram | None:
        """The stored program, or None when absent, unreadable or made for another signature."""
        meta_path, bin_path = self._paths(sig)
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            serialized = bin_path.read_bytes()
        except (OSError, ValueError):
            return None
        if meta.get("format") != FORMAT_VERSION or meta.get("signature") != sig.as_json():
            return None
        return StoredProgram(serialized, meta["params_tree"], float(meta.get("build_s", 0.0)))

    def save(self, sig: ProgramSignature, program: StoredProgram, units: float) -> None:
        meta_path, bin_path = self._paths(sig)
        meta_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = bin_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(program.serialized)
        tmp.replace(bin_path)
        meta = {
            "format": FORMAT_VERSION,
            "signature": sig.as_json(),
            "params_tree": program.params_tree,
            "build_s": program.build_s,
            "units": units,
        }
        tmp = meta_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(meta), encoding="utf-8")
        tmp.replace(meta_path)

    def recorded(self, family: str) -> list[tuple[str, str, float, float]]:
        """(key, role, units, build seconds) of every program of this family in the store."""
        found = []
        for meta_path in sorted((self.root / family).glob("*.json")):
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
                role = str(meta["signature"].get("role", FORWARD))
                found.append((meta_path.stem, role, float(meta["units"]), float(meta["build_s"])))
            except (OSError, ValueError, KeyError, AttributeError):
                continue
        return found
