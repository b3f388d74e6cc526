"""The spec-built GRU node in ONNX's default form, `linear_before_reset=0`, declared as such.

The same builder as `source_spec` with the attribute left at the spec's default: the reset gate is
applied before the recurrent matmul. That is no slip here (the `spec` source plants it as one):
this source declares the form, so every runtime's column is judged against the oracle's other form,
and a runtime that ignores the attribute (computing PyTorch's form) fails, the diagnosis naming it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backends.onnx.source_spec import SpecOptions, SpecSource
from conformance.forms import Form


@dataclass(frozen=True)
class SpecLbr0Source(SpecSource):
    options: SpecOptions = field(default_factory=lambda: SpecOptions(linear_before_reset=0))
    name = "spec-lbr0"
    form = Form(linear_before_reset=False)
