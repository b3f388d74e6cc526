"""onnx's own ReferenceEvaluator as a runtime: the spec's reading of the ops, in NumPy, CPU only.

It has no constant-folding path, so weights are always fed as inputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from backends.onnx.model_source import Prepared
from backends.onnx.runtime import OUTPUTS, Runtime
from conformance.cache import IN_MEMORY, Lru
from conformance.contract import UnsupportedCase, first_line


class ReferenceRunner:
    """onnx.reference.ReferenceEvaluator, one per model; weights are fed as inputs."""

    def __init__(self) -> None:
        self.evaluators: Lru[str, Any] = Lru(IN_MEMORY)

    def run(self, prepared: Prepared, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        from onnx.reference import ReferenceEvaluator

        if prepared.key not in self.evaluators:
            try:
                self.evaluators[prepared.key] = ReferenceEvaluator(prepared.model)
            except Exception as error:
                raise UnsupportedCase(f"ReferenceEvaluator: {first_line(error)}") from error
        try:
            return self.evaluators[prepared.key].run(OUTPUTS, feeds | prepared.weight_feeds)
        except (NotImplementedError, TypeError) as error:
            raise UnsupportedCase(f"ReferenceEvaluator: {first_line(error)}") from error


class ReferenceRuntime(Runtime):
    name = "reference"

    def describe(self, device: str, precision: str) -> dict[str, Any]:
        return {"weights": "inputs"}

    def runner(self, device: str, precision: str) -> ReferenceRunner:
        return ReferenceRunner()


REFERENCE = ReferenceRuntime()
