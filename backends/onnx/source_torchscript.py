"""torch's TorchScript-based ONNX exporter (`torch.onnx.export(dynamo=False)`) as a model source.

Run as `python -m backends.onnx.source_torchscript CASE_ID CACHE_ROOT`, this module is
the export worker the store starts in a fresh interpreter.
"""

from __future__ import annotations

import sys
from typing import Any

from backends.onnx.source_torch import TorchExportSource, worker_main
from conformance.case import Case

TORCHSCRIPT_OPSET = 20  # the newest opset the TorchScript exporter emits


class TorchScriptSource(TorchExportSource):
    name = "torchscript"
    worker_module = "backends.onnx.source_torchscript"
    export_note = f"dynamo=False, opset {TORCHSCRIPT_OPSET}, do_constant_folding=False"

    def to_onnx(self, model: Any, args: tuple[Any, ...], names: list[str], case: Case) -> Any:
        import io

        import onnx
        import torch

        b_ax, t_ax = (0, 1) if case.batch_first else (1, 0)
        axes = {"x": {b_ax: "batch", t_ax: "seq_len"}, "output": {b_ax: "batch", t_ax: "seq_len"}}
        axes |= {"h0": {1: "batch"}, "h_n": {1: "batch"}, "lengths": {0: "batch"}}
        buffer = io.BytesIO()
        torch.onnx.export(
            model,
            args,
            buffer,  # type: ignore[arg-type]  # accepts a binary file object; torch's annotation says path only
            dynamo=False,
            opset_version=TORCHSCRIPT_OPSET,
            input_names=names,
            output_names=["output", "h_n"],
            dynamic_axes={k: v for k, v in axes.items() if k in [*names, "output", "h_n"]},
            do_constant_folding=False,
        )
        return onnx.load_from_string(buffer.getvalue())


if __name__ == "__main__":
    raise SystemExit(worker_main(TorchScriptSource(), sys.argv[1:]))
