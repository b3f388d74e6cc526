"""The registered ONNX columns: every source below in every runtime below, and the entry-point factories.

Adding a runtime: write `backends/onnx/<runtime>.py` (a `Runtime`) and add it to `RUNTIMES`.
Adding a source: write `backends/onnx/source_<name>.py` (a `ModelSource`), add it to
`SOURCES`, and give its family an entry point in pyproject.toml (`onnx-<name> =
"backends.onnx.columns:<name>_backends"`, a factory defined here in one line).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

from backends.onnx.column import OnnxColumn
from backends.onnx.model_source import ModelSource
from backends.onnx.openvino import OPENVINO
from backends.onnx.ort import ORT
from backends.onnx.reference import REFERENCE
from backends.onnx.runtime import Runtime
from backends.onnx.source_dynamo import DynamoSource
from backends.onnx.source_spec import SpecSource
from backends.onnx.source_spec_activations import SpecActivationsSource
from backends.onnx.source_spec_lbr0 import SpecLbr0Source
from backends.onnx.source_torchscript import TorchScriptSource

SOURCES: tuple[ModelSource, ...] = (
    SpecSource(),
    TorchScriptSource(),
    DynamoSource(),
    SpecLbr0Source(),
    SpecActivationsSource(),
)
RUNTIMES: tuple[Runtime, ...] = (ORT, REFERENCE, OPENVINO)


def source_columns(source: ModelSource, runtimes: tuple[Runtime, ...] = RUNTIMES) -> Iterator[OnnxColumn]:
    """A source's columns: every runtime on CPU, then every runtime on each other device it has here."""
    for device in ("cpu", "cuda"):
        for runtime in runtimes:
            if device in runtime.devices():
                yield OnnxColumn.of(source, runtime, device)


def family_columns(family: str) -> Iterator[OnnxColumn]:
    """The columns of one entry-point family (`onnx-spec`, ...)."""
    for source in SOURCES:
        if source.family == family:
            yield from source_columns(source)


spec_backends = partial(family_columns, "onnx-spec")
torchscript_backends = partial(family_columns, "onnx-torchscript")
dynamo_backends = partial(family_columns, "onnx-dynamo")
spec_lbr0_backends = partial(family_columns, "onnx-spec-lbr0")
spec_activations_backends = partial(family_columns, "onnx-spec-activations")
