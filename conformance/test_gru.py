"""The conformance check: one test per (case, backend), parametrized by the plugin."""

from __future__ import annotations

from conformance.case import Case
from conformance.contract import Backend
from conformance.plugin import ConformanceRun, enact


def test_gru(case: Case, backend: Backend, conformance_run: ConformanceRun) -> None:
    result = conformance_run.check(backend, case)
    message = result.reason if result.verdict.outcome == "skipped" else f"{result.reason}\nrerun: {result.rerun}"
    enact(result.verdict, message)
