"""What torch's two ONNX exporters share as sources: the user-shaped module, the export, the weight rebinding.

Why weights become graph inputs: an export is keyed by structure, not weights, so
the stored model must be reusable for every weight set. Exporting with constant
folding off (`do_constant_folding=False` / `optimize=False`) keeps the parameters
as initializers named like `nn.GRU().state_dict()` with the exporter's own gate
reordering (Slice/Concat) in the graph; we turn those initializers into graph
inputs. The source then binds a case's canonical weights by name, and every
cell's comparison verifies that binding.

Each exporter is a subclass in its own module (`source_torchscript`, `source_dynamo`)
that says how to call `torch.onnx.export`; that module is also the worker the
store runs in a fresh interpreter (see `backends.onnx.export_store`).
"""

from __future__ import annotations

import json
import re
import time
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends.onnx import export_store
from backends.onnx.export_store import ExportedModel, ModelStore, Signature, versions
from backends.onnx.model_source import INSTALL_HINT, ModelSource, Prepared
from conformance.case import Case
from conformance.contract import Availability, Build, first_line
from conformance.data import Weights

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


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


def trace_units(sig: Signature, case: Case) -> float:
    """The size of an export for the plan: steps traced (seq_len x layers x directions at the trace shape)."""
    return float(sig.export_dims[1] * case.num_layers * case.num_directions)


def _module(case: Case, enforce_sorted: bool) -> Any:
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
            packed = pack_padded_sequence(x, rest.pop(0), batch_first=case.batch_first, enforce_sorted=enforce_sorted)
            out, h_n = self.gru(packed, h0)
            out, _ = pad_packed_sequence(out, batch_first=case.batch_first, total_length=x.shape[time_axis])
            return out, h_n

    return Model().eval()


@dataclass(frozen=True)
class TorchExportSource(ModelSource):
    """A torch ONNX exporter as a model source; `store` defaults to the suite's (`export_store.STORE`)."""

    store: ModelStore | None = None
    worker_module = ""  # the subclass's module: `python -m` runs it as the export worker
    export_note = ""  # how the exporter is called, for the report

    @property
    def models(self) -> ModelStore:
        return self.store if self.store is not None else export_store.STORE

    @abstractmethod
    def to_onnx(self, model: Any, args: tuple[Any, ...], names: list[str], case: Case) -> Any:
        """Call `torch.onnx.export` on the module (traced at `args`, inputs `names`); the ModelProto."""

    def problem(self) -> str | None:
        """Why this torch lacks the exporter, beyond `torch.onnx` itself; None if it has it."""
        return None

    def availability(self) -> Availability:
        try:
            import torch.onnx  # noqa: F401
        except ImportError as error:
            return Availability(False, f"torch.onnx is not importable: {first_line(error)}", INSTALL_HINT)
        problem = self.problem()
        return Availability(False, problem, INSTALL_HINT) if problem else Availability.ok()

    def prepare(self, cases: list[Case]) -> None:
        """Export every signature these cases need, in parallel fresh processes, before the first run."""
        self.models.prepare(self, cases)

    def prepared(self, case: Case, weights: Weights) -> Prepared:
        model = self.models.exported(self, case)
        feeds = {model.weights[name]: value for name, value in weights.tensors.items()}
        return Prepared(model.key, model.model, feeds, model.facts)

    def describe(self) -> dict[str, Any]:
        return versions() | {
            "export": f"{self.export_note}; dynamic batch and seq_len; weights rebound by state_dict name"
        }

    def cached_facts(self) -> list[dict[str, Any]]:
        return self.models.cached_facts(self.name)

    def plan(self, cases: list[Case]) -> list[Build]:
        """One export per signature (structure, sorting, trace shape); cached when the store holds it."""
        builds: dict[str, Build] = {}
        for case in cases:
            sig = Signature.of(self.name, case)
            key = sig.key()
            if key not in builds:
                builds[key] = Build(f"export ({self.name})", key, self.models.has(sig), trace_units(sig, case))
        return list(builds.values())

    def recorded(self) -> list[Build]:
        return [Build(f"export ({self.name})", k, True, u, s) for k, u, s in self.models.recorded(self.name)]

    def export(self, sig: Signature, case: Case) -> ExportedModel:
        """Export in this process (the store's worker calls it in a fresh one). Any error becomes `unsupported`."""
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
        started = time.perf_counter()
        try:
            proto = self.to_onnx(_module(ecase, sig.enforce_sorted), tuple(args), names, ecase)
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


# Exported once per server, in a throwaway child, to learn which modules the exporter loads lazily.
_DISCOVERY = (Case(2, 3, batch=2, seq_len=3), Case(2, 3, initial_state=True, lengths="unsorted", batch=3, seq_len=4))


def worker_main(source: TorchExportSource, argv: list[str]) -> int:
    """`python -m <source module> CASE_ID CACHE_ROOT`: one export, saved to the cache, quietly.

    `python -m <source module> --serve CACHE_ROOT`: a warm export server (`backends.onnx.export_pool`).
    """
    import contextlib
    import logging
    import os
    import warnings

    if argv[0] == "--serve":
        from backends.onnx import export_pool

        server_root = Path(argv[1])

        def export_one(case_id: str) -> None:
            case = Case.from_id(case_id)
            sig = Signature.of(source.name, case)
            ModelStore(server_root).save(sig, source.export(sig, case))

        def discover() -> None:
            for case in _DISCOVERY:
                source.export(Signature.of(source.name, case), case)

        return export_pool.serve(export_one, discover, export_pool.preload_path(server_root, source.name, versions()))
    case_id, root = argv
    case = Case.from_id(case_id)
    sig = Signature.of(source.name, case)
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        model = source.export(sig, case)
    ModelStore(Path(root)).save(sig, model)
    return 0
