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

Results are `cross_device` records (`conformance.records.CrossDeviceResult`) in the results JSONL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from conformance.case import Case
from conformance.contract import Backend
from conformance.data import GruOutput, Inputs, Weights, case_data
from conformance.pipeline import attempt, judge, refusal
from conformance.records import CrossDeviceResult
from conformance.time_limit import NO_LIMIT, TimeLimit
from conformance.tolerance import derive
from conformance.verdict import Verdict

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


def check(
    pair: DevicePair, case: Case, precision: str = "strict", data: Data = case_data, limit: TimeLimit = NO_LIMIT
) -> CrossDeviceResult:
    """Run the case on both devices and compare the two outputs (CPU as the expected side).

    `data` gives the case's weights and inputs: the live generator, or stored vectors.
    """
    result = CrossDeviceResult(
        case,
        pair.cpu.family,
        (pair.cpu.name, pair.gpu.name),
        (pair.cpu.device, pair.gpu.device),
        Verdict.PASS,
        precision,
    )
    for backend in (pair.cpu, pair.gpu):  # refuse before running either side
        refused = refusal(backend, case)
        if refused is not None:
            result.verdict, result.reason = refused.verdict or Verdict.ERROR, f"{backend.name}: {refused.reason}"
            return result
    weights, inputs = data(case)
    outputs: list[GruOutput] = []
    for backend in (pair.cpu, pair.gpu):
        tried = attempt(backend, case, weights, inputs, limit)
        if tried.output is None:  # a crash on one device is a finding, not a crash of the suite
            result.verdict, result.reason = tried.verdict or Verdict.ERROR, f"{backend.name}: {tried.reason}"
            return result
        outputs.append(tried.output)
    single = derive(case, precision)
    tolerance = replace(single, atol=2.0 * single.atol)  # each side within atol of the truth
    judged = judge(case, outputs[0], outputs[1], tolerance, inputs.lengths)
    result.tolerance = tolerance.as_dict()
    result.verdict, result.checks, result.reason = judged.verdict, judged.checks, judged.reason
    return result
