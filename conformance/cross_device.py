"""The cross-device check: the same backend on the CPU and on a GPU, compared with each other directly.

Both columns are already compared with the float64 oracle; this check answers the
question a user moving a model to the GPU asks, "does it still compute the same thing?",
and catches a device-only path (cuDNN, cuBLAS TF32, XLA GPU, the ORT CUDA provider)
drifting from its own CPU path even while both stay inside the oracle's tolerance.

Pairs: two selected backends of one family whose names differ only in the device, e.g.
`torch[cpu]` and `torch[cuda]`, or `onnx-spec/ort[cpu+default]` and `onnx-spec/ort[cuda+default]`.

Tolerance: each side is within `atol` of the exact answer (that is what the oracle check
certifies), so by the triangle inequality they are within `2 * atol` of each other; the
bound is the same derived one, no per-backend tuning.

Results are `cross_device` records in the results JSONL (readers skip kinds they don't know).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from conformance.case import Case
from conformance.compare import Check, compare, verdict_of, worst_headroom
from conformance.contract import Backend, UnsupportedCase, first_line
from conformance.data import GruOutput, Inputs, Weights, case_data
from conformance.tolerance import derive

KIND = "cross_device"
Data = Callable[[Case], tuple[Weights, Inputs]]


@dataclass(frozen=True)
class DevicePair:
    cpu: Backend
    gpu: Backend

    @property
    def id(self) -> str:
        """Test id part; `-vs-` keeps it `-k`-friendly (pytest -k accepts `[`, `]`, `+`, `-`, `/`)."""
        return f"{self.cpu.name}-vs-{self.gpu.name}"


def device_free_name(backend: Backend) -> str:
    """The name with its device taken out: `torch[cuda+default]` -> `torch[+default]`."""
    head, sep, tail = backend.name.rpartition(f"[{backend.device}")
    return f"{head}[{tail}" if sep else backend.name


def pairs(backends: list[Backend]) -> list[DevicePair]:
    """Every (cpu, gpu) pair of one backend among the selected ones, in selection order."""
    found = []
    for cpu in backends:
        if cpu.device != "cpu":
            continue
        key = (cpu.family, device_free_name(cpu))
        found += [
            DevicePair(cpu, gpu)
            for gpu in backends
            if gpu.device != "cpu" and (gpu.family, device_free_name(gpu)) == key
        ]
    return found


@dataclass
class CrossDeviceResult:
    case: Case
    pair: DevicePair
    verdict: str  # pass, fail, convention, unsupported, error, skipped
    precision: str
    reason: str = ""
    checks: list[Check] = field(default_factory=list)
    tolerance: dict[str, Any] | None = None

    @property
    def worst_headroom(self) -> float | None:
        return worst_headroom(self.checks)

    def as_record(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "case_id": self.case.id,
            "case": self.case.as_dict(),
            "family": self.pair.cpu.family,
            "backends": [self.pair.cpu.name, self.pair.gpu.name],
            "devices": [self.pair.cpu.device, self.pair.gpu.device],
            "verdict": self.verdict,
            "reason": self.reason,
            "checks": [c.as_dict() for c in self.checks],
            "worst_headroom": self.worst_headroom,
            "tolerance": self.tolerance,
            "precision": self.precision,
        }


def check(pair: DevicePair, case: Case, precision: str = "strict", data: Data = case_data) -> CrossDeviceResult:
    """Run the case on both devices and compare the two outputs (CPU as the expected side).

    `data` gives the case's weights and inputs: the live generator, or stored vectors.
    """
    result = CrossDeviceResult(case, pair, "pass", precision)
    for backend in (pair.cpu, pair.gpu):
        availability = backend.availability()
        if not availability.available:
            result.verdict, result.reason = "skipped", f"{backend.name}: {availability.describe()}"
            return result
        reason = backend.supports(case)
        if reason:
            result.verdict, result.reason = "unsupported", f"{backend.name}: {reason}"
            return result
    weights, inputs = data(case)
    outputs: list[GruOutput] = []
    for backend in (pair.cpu, pair.gpu):
        try:
            outputs.append(backend.run(case, weights, inputs))
        except UnsupportedCase as error:
            result.verdict, result.reason = "unsupported", f"{backend.name}: {error}"
            return result
        except Exception as error:  # a crash on one device is a finding, not a crash of the suite
            frame = traceback.extract_tb(error.__traceback__)[-1]
            result.verdict = "error"
            result.reason = f"{backend.name}: {first_line(error)} (at {frame.filename}:{frame.lineno})"
            return result
    single = derive(case, precision)
    tolerance = replace(single, atol=2.0 * single.atol)  # each side within atol of the truth
    result.tolerance = tolerance.as_dict()
    result.checks = compare(case, outputs[0], outputs[1], tolerance, inputs.lengths)
    result.verdict = verdict_of(result.checks)
    failing = [c.message for c in result.checks if not c.passed]
    result.reason = "\n".join(failing)
    return result
