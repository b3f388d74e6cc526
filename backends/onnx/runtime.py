"""What a runtime provides: where it runs, what it reports, and a runner that executes `Prepared` models.

A runtime is stateless and shared by every column that uses it; the runner it makes
holds the sessions of one column (one device, one precision mode).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Protocol

import numpy as np

from backends.onnx.model_source import Prepared
from conformance.contract import Availability

OUTPUTS = ["output", "h_n"]  # every source's graph outputs, in torch's layout


class Runner(Protocol):
    def run(self, prepared: Prepared, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """`[output, h_n]` for the model with `feeds` (x, h0, lengths) plus its weight feeds."""
        ...


class Runtime(ABC):
    """One way of executing ONNX models: `ort`, `reference`, ...; the `/<name>` in a column's name."""

    name: str
    modules: tuple[str, ...] = ()  # importable modules it needs besides onnx
    # Why the backward check is unsupported in every ONNX column (conformance.contract.backward_refusal).
    no_gradients: str = "an ONNX inference runtime runs the model's forward graph only; it computes no gradients"

    def devices(self) -> list[str]:
        """The devices this runtime can use here (a column per device); `cpu` always."""
        return ["cpu"]

    def availability(self, device: str) -> Availability:
        """Whether `device` is usable (the modules were checked by the column)."""
        return Availability.ok()

    def compute_format(self, device: str, precision: str, dtype: str) -> str | None:
        """The format a `dtype` model really computes in under `precision`, when the runtime can tell
        (OpenVINO picks its own); None when it follows the model (see `conformance.contract.StatesComputeFormat`)."""
        return None

    @abstractmethod
    def describe(self, device: str, precision: str) -> dict[str, Any]:
        """The runtime's notes for the report: version, device provider, weights mode, precision."""

    @abstractmethod
    def runner(self, device: str, precision: str) -> Runner:
        """A fresh runner for one column."""
