"""The conformance checks: one test per (case, backend) and quantity (`--quantity`), parametrized by the plugin."""

from __future__ import annotations

from conformance.case import Case
from conformance.contract import Backend
from conformance.plugin import ConformanceRun, enact
from conformance.records import BACKWARD


def test_gru(case: Case, backend: Backend, conformance_run: ConformanceRun) -> None:
    result = conformance_run.check(backend, case)
    message = result.reason if result.verdict.outcome == "skipped" else f"{result.reason}\nrerun: {result.rerun}"
    enact(result.verdict, message)


def test_gru_backward(case: Case, backend: Backend, conformance_run: ConformanceRun) -> None:
    """The backward check: the backend's gradients of the case's loss against the float64 BPTT oracle."""
    result = conformance_run.check(backend, case, BACKWARD)
    message = result.reason if result.verdict.outcome == "skipped" else f"{result.reason}\nrerun: {result.rerun}"
    enact(result.verdict, message)
