"""Torch -> ONNX exports: one per structural signature, isolated, parallel, cached on disk.

Why isolated: the torch.export-based exporter keeps state between calls (node
names and even use counts of shape nodes change after other exports in the same
process; see `tests/test_onnx_isolation.py`), so every export runs in a fresh
spawned process. A pool of such processes also runs exports in parallel.

Why weights become graph inputs: an export is keyed by structure, not weights, so
the stored model must be reusable for every weight set. Exporting with constant
folding off (`do_constant_folding=False` / `optimize=False`) keeps the parameters
as initializers named like `nn.GRU().state_dict()` with the exporter's own gate
reordering (Slice/Concat) in the graph; we turn those initializers into graph
inputs. The runtime then binds a case's canonical weights by name (see
`backends.onnx_runtime`), and every cell's comparison verifies that binding.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.case import Case
from conformance.contract import UnsupportedCase, first_line

EXPORTERS: tuple[str, ...] = ("torchscript", "dynamo")
CACHE_ENV = "GRU_CONFORMANCE_CACHE"
FORMAT_VERSION = 1  # bump when what is stored (or how it is made) changes
TORCHSCRIPT_OPSET = 20  # the newest opset the TorchScript exporter emits
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def cache_root() -> Path:
    """`$GRU_CONFORMANCE_CACHE` or `<repo>/.cache` (gitignored); ONNX models live under `onnx/`."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[1] / ".cache"


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


def quote(error: BaseException) -> str:
    """First line of a library error, ANSI colours stripped, plus its cause's first line when it has one.

    torch's export errors put the useful part ("Could not guard on data-dependent
    expression ...") in `__cause__`, behind a generic "Failed to export" line.
    """
    text = _ANSI.sub("", first_line(error))
    cause = error.__cause__
    if cause is not None:
        text += f" (cause: {_ANSI.sub('', first_line(cause))})"
    return text


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


def model_facts(proto: Any) -> dict[str, Any]:
    """Opset, op types (one GRU op or a decomposition) and the GRU attributes: the report's per-column notes."""
    from onnx import helper

    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    ops = sorted({n.op_type for n in proto.graph.node})
    grus = [
        {a.name: helper.get_attribute_value(a) for a in n.attribute if a.name != "hidden_size"}
        for n in proto.graph.node
        if n.op_type == "GRU"
    ]
    grus = [{k: (v.decode() if isinstance(v, bytes) else v) for k, v in g.items()} for g in grus]
    return {
        "opset": opset,
        "op_types": ops,
        "gru_nodes": len(grus),
        "form": "GRU op" if grus else "decomposition",
        "gru_attributes": sorted({json.dumps(g, sort_keys=True) for g in grus}),
    }


def weights_to_inputs(proto: Any, canonical: list[str]) -> dict[str, str]:
    """Move the parameter initializers to graph inputs (values dropped); returns canonical -> input name.

    Raises if a parameter is not found as an initializer: then the exporter folded
    or renamed it, and new weights can't be bound without guessing its transform.
    """
    from onnx import helper

    found: dict[str, str] = {}
    keep = []
    for init in proto.graph.initializer:
        bare = init.name.rsplit(".", 1)[-1]
        if bare in canonical and bare not in found:
            found[bare] = init.name
            proto.graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
        else:
            keep.append(init)
    missing = sorted(set(canonical) - set(found))
    if missing:
        raise RuntimeError(f"exported model has no initializer for {', '.join(missing)}; cannot rebind weights")
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(keep)
    return found


def _module(case: Case) -> Any:
    """The user-shaped model: nn.GRU, behind pack_padded_sequence/pad_packed_sequence when lengths vary."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from backends.torch_eager import TorchGru
    from conformance.data import case_data

    weights, _ = case_data(case)

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gru = TorchGru().build(case, weights)

        def forward(self, *args: Any) -> Any:
            x, rest = args[0], list(args[1:])
            h0 = rest.pop(0) if case.initial_state else None
            if not case.packed:
                return self.gru(x, h0)
            time_axis = 1 if case.batch_first else 0
            packed = pack_padded_sequence(
                x, rest.pop(0), batch_first=case.batch_first, enforce_sorted=case.enforce_sorted
            )
            out, h_n = self.gru(packed, h0)
            out, _ = pad_packed_sequence(out, batch_first=case.batch_first, total_length=x.shape[time_axis])
            return out, h_n

    return Model().eval()


def _export(sig: Signature, case: Case) -> ExportedModel:
    """Export in this process (the pool calls it in a fresh one). Any exporter error becomes `unsupported`."""
    import io

    import onnx
    import torch

    from backends.torch_eager import to_torch
    from conformance.data import case_data, param_names

    ecase = sig.export_case(case)
    _, inputs = case_data(ecase)
    names = ["x"] + (["h0"] if ecase.initial_state else []) + (["lengths"] if ecase.packed else [])
    args = [to_torch(torch, inputs.x, ecase.dtype, "cpu")]
    if ecase.initial_state:
        if inputs.h0 is None:
            raise ValueError(f"case {ecase.id}: initial_state=True but its inputs have no h0")
        args.append(to_torch(torch, inputs.h0, ecase.dtype, "cpu"))
    if ecase.packed:
        args.append(torch.as_tensor(inputs.lengths))
    b_ax, t_ax = (0, 1) if ecase.batch_first else (1, 0)
    started = time.perf_counter()
    try:
        model = _module(ecase)
        if sig.exporter == "torchscript":
            axes = {"x": {b_ax: "batch", t_ax: "seq_len"}, "output": {b_ax: "batch", t_ax: "seq_len"}}
            axes |= {"h0": {1: "batch"}, "h_n": {1: "batch"}, "lengths": {0: "batch"}}
            buffer = io.BytesIO()
            torch.onnx.export(
                model,
                tuple(args),
                buffer,  # type: ignore[arg-type]  # accepts a binary file object; torch's annotation says path only
                dynamo=False,
                opset_version=TORCHSCRIPT_OPSET,
                input_names=names,
                output_names=["output", "h_n"],
                dynamic_axes={k: v for k, v in axes.items() if k in [*names, "output", "h_n"]},
                do_constant_folding=False,
            )
            proto = onnx.load_from_string(buffer.getvalue())
        else:
            batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq_len")
            shapes: list[Any] = [{b_ax: batch, t_ax: seq}]
            if ecase.initial_state:
                shapes.append({1: batch})
            if ecase.packed:
                shapes.append({0: batch})
            program = torch.onnx.export(
                model,
                tuple(args),
                dynamo=True,
                dynamic_shapes={"args": tuple(shapes)},  # forward(*args): one entry for the var-positional
                input_names=names,
                output_names=["output", "h_n"],
                optimize=False,
                verbose=False,
            )
            if program is None:  # dynamo=True always returns the program
                raise RuntimeError("torch.onnx.export(dynamo=True) returned no ONNXProgram")
            proto = program.model_proto
        weight_inputs = weights_to_inputs(proto, param_names(ecase))
        onnx.checker.check_model(proto)
    except Exception as error:  # the exporter's refusal is a result: quote it
        return ExportedModel(
            sig.key(), sig.exporter, "unsupported", quote(error), export_s=time.perf_counter() - started
        )
    return ExportedModel(
        sig.key(),
        sig.exporter,
        "ok",
        model=proto.SerializeToString(),
        weights=weight_inputs,
        facts=model_facts(proto),
        export_s=time.perf_counter() - started,
    )


def _export_isolated(sig: Signature, case: Case, root: Path) -> ExportedModel:
    """Export in a fresh interpreter (`python -m backends.onnx_export`), which saves it; load the result.

    A subprocess, not multiprocessing: spawn/forkserver re-import the caller's
    `__main__`, which breaks any unguarded script that happens to trigger an export.
    """
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "backends.onnx_export", sig.exporter, case.id, str(root)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=repo, check=False)
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

    def _save(self, sig: Signature, model: ExportedModel) -> None:
        meta_path, model_path = self._paths(sig)
        meta_path.parent.mkdir(parents=True, exist_ok=True)
        if model.status == "ok":
            tmp = model_path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(model.model)
            tmp.replace(model_path)  # atomic: a concurrent reader sees the whole file or none
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

    def prepare(self, exporter: str, cases: Iterable[Case]) -> None:
        """Export every missing signature of `cases`, in parallel fresh processes."""
        todo: dict[Signature, Case] = {}
        for case in cases:
            sig = Signature.of(exporter, case)
            if sig not in todo and self.cached(sig) is None:
                todo[sig] = case
        if todo:
            self._export_many(todo)

    def _export_many(self, todo: dict[Signature, Case]) -> None:
        from concurrent.futures import ThreadPoolExecutor

        started = time.perf_counter()
        root = self._root or cache_root()
        with ThreadPoolExecutor(min(self.workers, len(todo))) as pool:
            futures = {sig: pool.submit(_export_isolated, sig, case, root) for sig, case in todo.items()}
            for sig, future in futures.items():
                model = future.result()
                self.stats.add(model)
                if self._load(sig) is None:
                    self._save(sig, model)  # a crashed worker's refusal is cached too: no retry storm
                self.memory[sig.key()] = model
        self.stats.wall_s += time.perf_counter() - started

    def get(self, exporter: str, case: Case) -> ExportedModel:
        sig = Signature.of(exporter, case)
        model = self.cached(sig)
        if model is None:
            self._export_many({sig: case})
            model = self.memory[sig.key()]
        return model


STORE = ModelStore()


def exported(exporter: str, case: Case) -> ExportedModel:
    """The model for `case`, or `UnsupportedCase` quoting the exporter's own error."""
    model = STORE.get(exporter, case)
    if model.status != "ok":
        raise UnsupportedCase(f"{exporter} export: {model.message}")
    return model


def exporter_available(exporter: str) -> str | None:
    """None if this torch has the exporter, else why not."""
    try:
        import inspect

        import torch.onnx
    except ImportError as error:
        return f"torch.onnx is not importable: {first_line(error)}"
    if exporter == "dynamo":
        if "dynamo" not in inspect.signature(torch.onnx.export).parameters:
            return f"torch {torch.__version__} has no dynamo=True exporter"
        try:
            import onnxscript  # noqa: F401
        except ImportError as error:
            return f"onnxscript is not importable: {first_line(error)}"
    return None


def dynamo_backends() -> Iterator[Any]:
    """`onnx-dynamo/<runtime>` columns: the torch.export-based exporter in every runtime."""
    from backends.onnx_runtime import runtime_backends

    yield from runtime_backends("dynamo")


def torchscript_backends() -> Iterator[Any]:
    """`onnx-torchscript/<runtime>` columns: the TorchScript-based exporter in every runtime."""
    from backends.onnx_runtime import runtime_backends

    yield from runtime_backends("torchscript")


def _worker_main(argv: list[str]) -> int:
    """`python -m backends.onnx_export EXPORTER CASE_ID CACHE_ROOT`: one export, saved to the cache."""
    import contextlib
    import logging
    import warnings

    exporter, case_id, root = argv
    case = Case.from_id(case_id)
    sig = Signature.of(exporter, case)
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        model = _export(sig, case)
    ModelStore(Path(root))._save(sig, model)
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(_worker_main(sys.argv[1:]))
