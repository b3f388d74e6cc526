"""Exported models by structural signature: memory, then disk, then an export in a fresh interpreter.

Why isolated: the torch.export-based exporter keeps state between calls (node
names and even use counts of shape nodes change after other exports in the same
process; `tests/test_onnx_export.py::test_dynamo_export_is_the_same_first_or_after_others`
checks that ours don't), so every export runs in a fresh process, started as
`python -m <the exporter's module> CASE_ID CACHE_ROOT`. A pool of such processes
also runs exports in parallel.

Why one model per signature serves every case: exports take the weights as graph
inputs (see `backends.onnx.source_torch`), so the store keys them by structure only.
The store knows an exporter only by its name and worker module; it imports no source.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from conformance.case import Case
from conformance.contract import UnsupportedCase

CACHE_ENV = "GRU_CONFORMANCE_CACHE"
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
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else REPO / ".cache"


def versions() -> dict[str, str]:
    """The library versions an exported model depends on; part of every cache key."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("torch", "onnx", "onnxscript"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "absent"
    return found


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
        """The case the model is traced at: same structure, run at the export dims, fixed seed."""
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


def _export_isolated(exporter: Exporter, sig: Signature, case: Case, root: Path) -> ExportedModel:
    """Export in a fresh interpreter (`python -m <worker_module>`), which saves it; load the result.

    A subprocess, not multiprocessing: spawn/forkserver re-import the caller's
    `__main__`, which breaks any unguarded script that happens to trigger an export.
    """
    import subprocess
    import sys

    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
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
        self.memory: dict[str, ExportedModel] = {}
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
        """Export every missing signature of `cases`, in parallel fresh processes."""
        todo: dict[Signature, Case] = {}
        for case in cases:
            sig = Signature.of(exporter.name, case)
            if sig not in todo and self.cached(sig) is None:
                todo[sig] = case
        if todo:
            self._export_many(exporter, todo)

    def _export_many(self, exporter: Exporter, todo: dict[Signature, Case]) -> None:
        from concurrent.futures import ThreadPoolExecutor

        started = time.perf_counter()
        root = self._root or cache_root()
        with ThreadPoolExecutor(min(self.workers, len(todo))) as pool:
            futures = {sig: pool.submit(_export_isolated, exporter, sig, case, root) for sig, case in todo.items()}
            for sig, future in futures.items():
                model = future.result()
                self.stats.add(model)
                if self._load(sig) is None:
                    self.save(sig, model)  # a crashed worker's refusal is cached too: no retry storm
                self.memory[sig.key()] = model
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
