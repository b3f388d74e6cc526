"""The invariant checks: one test per (invariant, backend, case) the tier declares, parametrized by the plugin."""

from __future__ import annotations

from conformance.case import Case
from conformance.contract import Backend
from conformance.invariants import Invariant
from conformance.plugin import ConformanceRun, enact


def test_invariant(case: Case, backend: Backend, invariant: Invariant, conformance_run: ConformanceRun) -> None:
    result = conformance_run.check_invariant(backend, case, invariant)
    message = result.reason if result.verdict.outcome == "skipped" else f"{result.reason}\nrerun: {result.rerun}"
    enact(result.verdict, message)
