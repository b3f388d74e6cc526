"""The pipeline's diagnose step: name the likely mistake behind a failure.

A failing result is tested against the library of semantic variants (`conformance.variants`:
the other reset form, swapped gates, a misplaced bias, layout and state mistakes) and
against lower-precision arithmetic (`conformance.precision`). Every hypothesis that
reproduces the backend's output within the case's tolerance is recorded with the result,
best first. Only results still failing after the registry are diagnosed: a pass has nothing
to explain, and a known divergence is explained by its entry. Float64 NumPy on small cases,
so the cost is a few oracle calls per failure (`benchmarks/bench_diagnosis.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from conformance.case import Case
from conformance.data import GruOutput, Inputs, Weights
from conformance.precision import PrecisionMatch, diagnose_precision
from conformance.variants import VariantMatch, diagnose


@dataclass
class Diagnosis:
    """The hypotheses that reproduce a failing output: semantic variants, best first, and a precision match."""

    variants: list[VariantMatch] = field(default_factory=list)
    precision: PrecisionMatch | None = None

    @property
    def found(self) -> bool:
        return bool(self.variants) or self.precision is not None

    def describe(self) -> str:
        """One line for the failure message and the terminal summary."""
        if self.variants:
            best = self.variants[0]
            others = [m.id for m in self.variants[1:]]
            also = f" (also consistent: {', '.join(others)})" if others else ""
            return f"likely mistake: {best.describe()}{also}"
        if self.precision is not None:
            return f"likely mistake: {self.precision.describe()}"
        return "no known variant or lower precision reproduces this result"

    def as_dict(self) -> dict[str, Any]:
        return {
            "variants": [m.as_dict() for m in self.variants],
            "precision": None if self.precision is None else self.precision.as_dict(),
            "summary": self.describe(),
        }


def diagnose_failure(
    case: Case, weights: Weights, inputs: Inputs, expected: GruOutput, actual: GruOutput, atol: float
) -> Diagnosis:
    """Every variant, and the coarser format, that reproduces `actual` within `atol`."""
    variants = diagnose(case, weights, inputs, actual, atol, expected)
    precision = None if variants else diagnose_precision(case, weights, inputs, actual, atol, expected)
    return Diagnosis(variants, precision)
