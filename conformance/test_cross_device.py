"""The cross-device check: one test per (case, backend on both CPU and GPU), parametrized by the plugin."""

from __future__ import annotations

from conformance.case import Case
from conformance.cross_device import DevicePair
from conformance.plugin import ConformanceRun, enact


def test_cross_device(case: Case, device_pair: DevicePair, conformance_run: ConformanceRun) -> None:
    result = conformance_run.check_devices(device_pair, case)
    message = (
        result.reason
        if result.verdict.outcome != "failed"
        else f"{device_pair.id} disagree on {case.id}\n{result.reason}"
    )
    enact(result.verdict, message)
