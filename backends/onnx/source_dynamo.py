"""torch's torch.export-based ONNX exporter (`torch.onnx.export(dynamo=True)`) as a model source.

Run as `python -m backends.onnx.source_dynamo CASE_ID CACHE_ROOT`, this module is the
export worker the store starts in a fresh interpreter (this exporter keeps state
between calls in one process; see `backends.onnx.export_store`).
"""

from __future__ import annotations

import sys
from typing import Any

from backends.onnx.source_torch import TorchExportSource, worker_main
from conformance.case import Case
from conformance.contract import Refusal, first_line

# torch.export can't trace pack_padded_sequence with a dynamic batch: every packed case
# (sorted, unsorted, even full lengths) fails in step 1/3, with one of two causes.
PACKED = Refusal(
    "dynamo-export-packed",
    "dynamo export: TorchExportError: Failed to export the model with torch.export "
    "(cause: GuardOnDataDependentSymNode: Could not guard on data-dependent expression, or "
    "TypeError: zeros(): argument 'size' failed to unpack): packed input (pack_padded_sequence) can't be exported",
)


class DynamoSource(TorchExportSource):
    name = "dynamo"
    worker_module = "backends.onnx.source_dynamo"
    export_note = "dynamo=True, optimize=False"

    def refusals(self, case: Case) -> tuple[Refusal, ...]:
        return (PACKED,) if case.packed else ()

    def problem(self) -> str | None:
        import inspect

        import torch.onnx

        if "dynamo" not in inspect.signature(torch.onnx.export).parameters:
            return f"torch {torch.__version__} has no dynamo=True exporter"
        try:
            import onnxscript  # noqa: F401
        except ImportError as error:
            return f"onnxscript is not importable: {first_line(error)}"
        return None

    def to_onnx(self, model: Any, args: tuple[Any, ...], names: list[str], case: Case) -> Any:
        import torch

        b_ax, t_ax = (0, 1) if case.batch_first else (1, 0)
        batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq_len")
        shapes: list[Any] = [{b_ax: batch, t_ax: seq}]
        if case.initial_state:
            shapes.append({1: batch})
        if case.packed:
            shapes.append({0: batch})
        program = torch.onnx.export(
            model,
            args,
            dynamo=True,
            dynamic_shapes={"args": tuple(shapes)},  # forward(*args): one entry for the var-positional
            input_names=names,
            output_names=["output", "h_n"],
            optimize=False,
            verbose=False,
        )
        if program is None:  # dynamo=True always returns the program
            raise RuntimeError("torch.onnx.export(dynamo=True) returned no ONNXProgram")
        return program.model_proto


if __name__ == "__main__":
    raise SystemExit(worker_main(DynamoSource(), sys.argv[1:]))
