"""The cross-device check: one test per (case, backend on both CPU and GPU), parametrized by the plugin."""

from __future__ import annotations

import pytest

from conformance.case import Case
from conformance.cross_device import DevicePair
from conformance.plugin import ConformanceRun


def test_cross_device(case: Case, device_pair: DevicePair, conformance_run: ConformanceRun) -> None:
    result = conformance_run.check_devices(device_pair, case)
    if result.verdict in ("skipped", "unsupported"):
        pytest.skip(f"{result.verdict}: {result.reason}")
    if result.verdict == "convention":
        pytest.xfail(f"{result.verdict}: {result.reason}")
    if result.verdict != "pass":
        pytest.fail(f"{result.verdict}: {device_pair.id} disagree on {case.id}\n{result.reason}", pytrace=False)
