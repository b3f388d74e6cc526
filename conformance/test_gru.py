"""The conformance check: one test per (case, backend), parametrized by the plugin."""

from __future__ import annotations

import pytest

from conformance.case import Case
from conformance.contract import Backend
from conformance.plugin import ConformanceRun


def test_gru(case: Case, backend: Backend, conformance_run: ConformanceRun) -> None:
    result = conformance_run.check(backend, case)
    explained = f"{result.reason}\nrerun: {result.rerun}"
    if result.verdict in ("skipped", "unsupported"):
        pytest.skip(f"{result.verdict}: {result.reason}")
    if result.verdict in ("known_divergence", "convention"):
        pytest.xfail(f"{result.verdict}: {explained}")
    if result.verdict != "pass":
        pytest.fail(f"{result.verdict}: {explained}", pytrace=False)
