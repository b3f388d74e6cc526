"""The oracle check: one (backend, case) against the float64 oracle (or stored vectors) -> a Result.

A composition of the pipeline's steps (`conformance.pipeline`): attempt, judge, relabel.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import lru_cache

from conformance.case import Case
from conformance.contract import Backend, Refusal
from conformance.data import GruOutput, Inputs, Weights, case_data
from conformance.diagnosis import diagnose_failure
from conformance.divergences import Divergence
from conformance.oracle import gru_reference
from conformance.pipeline import Reference, attempt, confirm, judge, relabel
from conformance.records import Result, rerun_command
from conformance.tolerance import derive
from conformance.verdict import Verdict


@lru_cache(maxsize=64)
def oracle_reference(case: Case) -> tuple[Weights, Inputs, GruOutput]:
    """Weights, inputs and the float64 oracle's answer; computed once per case per process."""
    weights, inputs = case_data(case)
    return weights, inputs, gru_reference(case, weights, inputs)


ORACLE = Reference("oracle", oracle_reference)


def check(
    backend: Backend,
    case: Case,
    reference: Reference = ORACLE,
    registry: list[Divergence] | None = None,
    precision: str = "strict",
    rerun_args: Sequence[str] = (),
    probe: Refusal | None = None,
) -> Result:
    """`rerun_args` are the run's options a rerun needs besides backend, case and reference
    (`--backend-module`, a non-default `--divergences`). `probe`: this case is the run's representative
    of a refusal the backend declares statically; it is attempted anyway (`conformance.plan`)."""
    result = Result(
        case=case,
        backend=backend.name,
        family=backend.family,
        device=backend.device,
        verdict=Verdict.PASS,
        rerun=rerun_command(case, backend.name, precision, [*rerun_args, *reference.rerun_args]),
        precision=precision,
        reference=reference.name,
    )
    started = time.perf_counter()
    weights, inputs, expected = reference.load(case)
    reference_s = time.perf_counter() - started
    tried = attempt(backend, case, weights, inputs, probe)
    result.timing = {"reference_s": reference_s, **tried.timing}
    if tried.output is None:
        result.verdict, result.reason = tried.verdict or Verdict.ERROR, tried.reason
    else:
        started = time.perf_counter()
        tolerance = derive(case, precision)
        judged = judge(case, expected, tried.output, tolerance, inputs.lengths)
        result.tolerance = tolerance.as_dict()
        result.verdict, result.checks, result.reason = judged.verdict, judged.checks, judged.reason
        result.timing["compare_s"] = time.perf_counter() - started
    if probe is not None:
        result.probe = probe.key
        confirm(result, probe)
    relabel(result, registry or [])
    if result.verdict == Verdict.FAIL and tried.output is not None and _numbers_differ(result):
        started = time.perf_counter()
        diagnosis = diagnose_failure(case, weights, inputs, expected, tried.output, tolerance.atol)
        result.diagnosis = diagnosis.as_dict()
        result.reason += f"\n{diagnosis.describe()}"
        result.timing["diagnose_s"] = time.perf_counter() - started
    return result


def _numbers_differ(result: Result) -> bool:
    """Worth diagnosing: an arithmetic or shape failure (a dtype-only failure has nothing to explain)."""
    return any(c.kind in ("arithmetic", "shape") for c in result.failing_checks)
