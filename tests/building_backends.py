"""A correct GRU that builds something before its first case and refuses some cases: what the terminal shows.

The example NumPy adapter plus a `prepare` that reports progress the way the ONNX and JAX
backends do, and a refusal with a reason (so a run has skipped checks whose reasons must
stay out of the default terminal summary).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from example_gru_backend.adapter import NumpyGru

from conformance import progress
from conformance.case import Case


@dataclass
class BuildingGru(NumpyGru):
    family: str = "building"

    def prepare(self, cases: list[Case]) -> None:
        structures = sorted({repr(c.structure) for c in cases})
        with progress.task("build (building)", len(structures), "0 cached") as task:
            for structure in structures:
                task.step(structure)

    def supports(self, case: Case) -> str | None:
        return "refused on purpose: two layers" if case.num_layers == 2 else None


def backends() -> Iterator[BuildingGru]:
    yield BuildingGru()
