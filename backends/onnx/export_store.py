"""Exported models by structural signature: memory, then disk, then an export in an isolated process.

Why isolated: the torch.export-based exporter keeps state between calls (node
names, use counts of shape nodes, even whether an axis stays dynamic change after
other exports in the same process; `tests/test_onnx_export.py` checks that ours don't),
so every export runs in a process that has exported nothing before: a child forked
from a warm exporter server (`backends.onnx.export_pool`), which has imported torch
and the exporter once. A pool of such servers runs exports in parallel.

Why one model per signature serves every case: exports take the weights as graph
inputs (see `backends.onnx.source_torch`), so the store keys them by structure only.
The store knows an exporter only by its name and worker module; it imports no source.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from backends.onnx import export_pool
from conformance import progress
from conformance.cache import IN_MEMORY, Lru
from conformance.cache import cache_root as _core_cache_root
from conformance.case import Case
from conformance.contract import UnsupportedCase

FORMAT_VERSION = 1  # bump when what is stored (or how it is made) changes
REPO = Path(__file__).resolve().parents[2]


class Exporter(Protocol):
    """What the store needs of an exporter: a name (cache folder, key) and where its worker lives."""

    @property
    def name(self) -> str: ...  # "torchscript", "dynamo"

    @property
    def worker_module(self) -> str: ...  # `python -m <worker_module> CASE_ID CACHE_ROOT` exports one model


def cache_root() -> Path:
    """`$GRU_CONFORMANCE_CACHE` or `<repo>/.cache` (gitignored); ONNX models live under `onnx/`."""
    return _core_cache_root()


@functools.cache
def _installed(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "absent"


def versions() -> dict[str, str]:
    """The library versions an exported model depends on; part of every cache key (read once per process)."""
    return {package: _installed(package) for package in ("torch", "onnx", "onnxscript")}


@dataclass(frozen=True)
class Signature:
    """What fixes an exported graph: exporter, `case.structure`, enforce_sorted and the export dims."""

    exporter: str
    structure: tuple[Any, ...]
    enforce_sorted: bool
    export_dims: tuple[int, int]

    @classmethod
    def of(cls, exporter: str, case: Case) -> Signature:
        return cls(exporter, case.structure, case.enforce_sorted, case.export_dims)

    def export_case(self, case: Case) -> Case:
        """The data the model is traced with: same structure, at the export dims, fixed seed.

        A packed batch traced at batch 1 or seq_len 1 can only hold full lengths, so its case
        says `full`; the traced module still takes the signature's `enforce_sorted`.
        """
        batch, seq_len = self.export_dims
        lengths = "dense" if case.lengths == "dense" else ("sorted" if case.enforce_sorted else "unsorted")
        if lengths != "dense" and (batch < 2 or seq_len < 2):
            lengths = "full"  # a one-item or one-step packed batch can only be full (and sorted)
        fields = case.as_dict() | {"batch": batch, "seq_len": seq_len, "lengths": lengths, "export_shape": "same"}
        return Case.from_dict(fields | {"seed": 0})

    def key(self) -> str:
        text = json.dumps(
            [
                FORMAT_VERSION,
                self.exporter,
                list(self.structure),
                self.enforce_sorted,
                list(self.export_dims),
                versions(),
            ]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass
class ExportedModel:
    """A cached export: the model bytes (weights as inputs) or the exporter's refusal, plus facts."""

    key: str
    exporter: str
    status: str  # "ok" or "unsupported"
    message: str = ""
    model: bytes = b""
    weights: dict[str, str] = field(default_factory=dict)  # canonical name -> graph input name
    facts: dict[str, Any] = field(default_factory=dict)
    export_s: float = 0.0


def _worker_env() -> dict[str, str]:
    return os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def _export_isolated(exporter: Exporter, sig: Signature, case: Case, root: Path) -> ExportedModel:
    """Export in a fresh interpreter (`python -m <worker_module> CASE_ID ROOT`), which saves it; load the result.

    The reference the pool is measured against (an export in a process that never exported
    before). A subprocess, not multiprocessing: spawn/forkserver re-import the caller's
    `__main__`, which breaks any unguarded script that happens to trigger an export.
    """
    import subprocess
    import sys

    env = _worker_env()
    command = [sys.executable, "-m", exporter.worker_module, case.id, str(root)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, check=False)
    model = ModelStore(root)._load(sig)
    if done.returncode != 0 or model is None:  # the worker itself died (e.g. a segfault in the exporter)
        tail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return ExportedModel(sig.key(), sig.exporter, "unsupported", f"export process failed: {tail}")
    return model


@dataclass
class ExportStats:
    """Exports actually performed in this process, per exporter (zero on a warm cache)."""

    count: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0

    def add(self, model: ExportedModel) -> None:
        self.count[model.exporter] = self.count.get(model.exporter, 0) + 1
        self.seconds[model.exporter] = self.seconds.get(model.exporter, 0.0) + model.export_s


class ModelStore:
    """Exported models by signature: memory, then disk, then a fresh-process export."""

    def __init__(self, root: Path | None = None, workers: int | None = None) -> None:
        self._root = root
        self.workers = workers or max(1, min(2, os.cpu_count() or 1))
        self.memory: Lru[str, ExportedModel] = Lru(IN_MEMORY)
        self.stats = ExportStats()

    @property
    def root(self) -> Path:
        return (self._root or cache_root()) / "onnx"

    def _paths(self, sig: Signature) -> tuple[Path, Path]:
        base = self.root / sig.exporter / sig.key()
        return base.with_suffix(".json"), base.with_suffix(".onnx")

    def _load(self, sig: Signature) -> ExportedModel | None:
        meta_path, model_path = self._paths(sig)
        if not meta_path.exists():
            return None
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        model = model_path.read_bytes() if meta["status"] == "ok" else b""
        return ExportedModel(model=model, **{k: v for k, v in meta.items() if k != "signature"})

    def save(self, sig: Signature, model: ExportedModel) -> None:
        """Write a model and its metadata atomically (a concurrent reader sees whole files or none)."""
        meta_path, model_path = self._paths(sig)
        meta_path.parent.mkdir(parents=True, exist_ok=True)
        if model.status == "ok":
            tmp = model_path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(model.model)
            tmp.replace(model_path)
        meta = {k: v for k, v in model.__dict__.items() if k != "model"}
        meta["signature"] = {**sig.__dict__, "versions": versions()}
        tmp = meta_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(meta, indent=1, default=str), encoding="utf-8")
        tmp.replace(meta_path)

    def has(self, sig: Signature) -> bool:
        """Whether the store holds this signature (memory or disk), without loading it."""
        return sig.key() in self.memory or self._paths(sig)[0].exists()

    def recorded(self, exporter: str) -> list[tuple[str, float, float]]:
        """(key, steps traced, export seconds) of every model of this exporter on disk, any versions."""
        found = []
        for meta_path in sorted((self.root / exporter).glob("*.json")):
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
                sig = meta["signature"]
                steps = sig["export_dims"][1] * sig["structure"][2] * (2 if sig["structure"][3] else 1)
                found.append((meta_path.stem, float(steps), float(meta["export_s"])))
            except (OSError, ValueError, KeyError, IndexError, TypeError):
                continue
        return found

    def cached(self, sig: Signature) -> ExportedModel | None:
        key = sig.key()
        if key not in self.memory:
            loaded = self._load(sig)
            if loaded is None:
                return None
            self.memory[key] = loaded
        return self.memory[key]

    def cached_facts(self, exporter: str) -> list[dict[str, Any]]:
        """Facts of every model this exporter has in the cache for the installed library versions."""
        found = []
        for meta_path in sorted((self.root / exporter).glob("*.json")):
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if meta.get("status") == "ok" and meta.get("signature", {}).get("versions") == versions():
                found.append(meta["facts"])
        return found

    def prepare(self, exporter: Exporter, cases: Iterable[Case]) -> None:
        """Export every missing signature of `cases`, in parallel isolated processes, showing progress."""
        todo: dict[Signature, Case] = {}
        seen: set[Signature] = set()
        for case in cases:
            sig = Signature.of(exporter.name, case)
            if sig not in seen:
                seen.add(sig)
                if self.cached(sig) is None:
                    todo[sig] = case
        if todo:
            self._export_many(exporter, todo, cached=len(seen) - len(todo))

    def _export_many(self, exporter: Exporter, todo: dict[Signature, Case], cached: int = 0) -> None:
        started = time.perf_counter()
        root = self._root or cache_root()
        by_id = {case.id: (sig, case) for sig, case in todo.items()}
        with progress.task(f"export ({exporter.name})", len(todo), f"{cached} cached") as task:

            def done(case_id: str, status: int, tail: str) -> None:
                sig, _ = by_id[case_id]
                model = self._load(sig)
                if status != 0 or model is None:  # the export process itself died (e.g. a segfault)
                    model = ExportedModel(sig.key(), sig.exporter, "unsupported", f"export process failed: {tail}")
                    self.save(sig, model)  # a crashed export's refusal is cached too: no retry storm
                self.stats.add(model)
                self.memory[sig.key()] = model
                task.step(case_id, ok=status == 0)

            export_pool.run_pool(exporter.worker_module, root, by_id, self.workers, _worker_env(), REPO, done)
        self.stats.wall_s += time.perf_counter() - started

    def get(self, exporter: Exporter, case: Case) -> ExportedModel:
        sig = Signature.of(exporter.name, case)
        model = self.cached(sig)
        if model is None:
            self._export_many(exporter, {sig: case})
            model = self.memory[sig.key()]
        return model

    def exported(self, exporter: Exporter, case: Case) -> ExportedModel:
        """The model for `case`, or `UnsupportedCase` quoting the exporter's own error."""
        model = self.get(exporter, case)
        if model.status != "ok":
            raise UnsupportedCase(f"{exporter.name} export: {model.message}")
        return model


STORE = ModelStore()  # the suite's store (`$GRU_CONFORMANCE_CACHE` or `.cache/`); tests and benchmarks make their own
