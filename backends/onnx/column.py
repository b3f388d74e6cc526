"""One ONNX column = one model source x one runtime on one device: `onnx-spec/ort[cpu]`.

The column is what the suite sees (the adapter contract); it asks its source for the
case's model and hands it to its runtime's runner. It imports no source: sources are
given to it (see `backends.onnx.columns` for the registered combinations).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backends.onnx.model_source import INSTALL_HINT, ModelSource
from backends.onnx.runtime import Runner, Runtime
from conformance.case import Case
from conformance.contract import (
    Availability,
    BaseBackend,
    Build,
    Refusal,
    first_line,
    refusal_reason,
    smallest_case_runs,
)
from conformance.data import GruOutput, Inputs, Weights
from conformance.forms import Form


@dataclass
class OnnxColumn(BaseBackend):
    """A model source in a runtime; build it with `OnnxColumn.of(source, runtime, device)`."""

    source: ModelSource = field(kw_only=True)
    runtime: Runtime = field(kw_only=True)
    runner: Runner | None = field(default=None, repr=False)
    facts: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    _whole: Availability | None = field(default=None, repr=False)  # does the library run this column at all?

    @classmethod
    def of(cls, source: ModelSource, runtime: Runtime, device: str = "cpu") -> OnnxColumn:
        return cls(source.family, device, source=source, runtime=runtime)

    @property
    def form(self) -> Form:
        """The form its source's models declare (what the engine judges the column against)."""
        return self.source.form

    @property
    def name(self) -> str:
        """`onnx-spec/ort[cpu]`: the base name with the runtime spliced in before the device column."""
        return super().name.replace("[", f"/{self.runtime.name}[", 1)

    @property
    def no_gradients(self) -> str:
        """Why the backward check is unsupported here (`conformance.contract.backward_refusal`)."""
        return self.runtime.no_gradients

    def availability(self) -> Availability:
        for module in ("onnx", *self.runtime.modules):
            try:
                importlib.import_module(module)
            except ImportError as error:
                return Availability(False, f"{module} is not importable: {first_line(error)}", INSTALL_HINT)
        source = self.source.availability()
        if not source.available:
            return source
        runtime = self.runtime.availability(self.device)
        if not runtime.available or not self.source.cheap:
            return runtime
        if self._whole is None:  # once per process: a real run of the smallest case
            self._whole = smallest_case_runs(self.run)
        return self._whole

    def refusals(self, case: Case) -> tuple[Refusal, ...]:
        """The source's declared refusals, then the runtime's for the model the source would make."""
        return (*self.source.refusals(case), *self.runtime.refusals(case, self.device, self.source.gru_layout(case)))

    def supports(self, case: Case) -> str | None:
        return refusal_reason(self.refusals(case))

    def describe(self) -> dict[str, Any]:
        import onnx

        notes: dict[str, Any] = {"source": self.source.name, "runtime": self.runtime.name, "onnx": onnx.__version__}
        notes |= self.runtime.describe(self.device, self.precision)
        notes |= self.source.describe()
        # Facts of the models this column ran or its source has cached, merged: opset, op types,
        # GRU attributes. (The plugin asks before the first run, so the cache is the useful source.)
        merged: dict[str, set[str]] = {}
        for facts in [*self.facts.values(), *self.source.cached_facts()]:
            for k, v in facts.items():
                merged.setdefault(k, set()).update(map(str, v if isinstance(v, list) else [v]))
        notes["models"] = {k: sorted(v) for k, v in merged.items()}
        return notes

    def compute_format(self, case: Case) -> str | None:
        """What the runtime states it computes this case in (`conformance.contract.StatesComputeFormat`)."""
        return self.runtime.compute_format(self.device, self.precision, case.dtype)

    def prepare(self, cases: list[Case]) -> None:
        """Let the source build every model these cases need, before the first `run`."""
        self.source.prepare(cases)

    def plan(self, cases: list[Case]) -> list[Build]:
        """The source's builds (a column shares its exporter's builds with the other runtimes)."""
        return self.source.plan(cases)

    def recorded(self) -> list[Build]:
        return self.source.recorded()

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        prepared = self.source.prepared(case, weights)
        if prepared.facts:
            self.facts[prepared.key] = prepared.facts
        if self.runner is None:
            self.runner = self.runtime.runner(self.device, self.precision)
        feeds: dict[str, np.ndarray] = {"x": np.asarray(inputs.x)}
        if inputs.h0 is not None:
            feeds["h0"] = np.asarray(inputs.h0)
        if inputs.lengths is not None:
            feeds["lengths"] = np.asarray(inputs.lengths, dtype=np.int64)
        output, h_n = self.runner.run(prepared, feeds)
        return GruOutput(output=np.asarray(output), h_n=np.asarray(h_n))
