"""The oracle check: one (backend, case) against the float64 oracle (or stored vectors) -> a Result.

A composition of the pipeline's steps (`conformance.pipeline`): attempt, judge, relabel. The
backward check (`check_backward`) is the same composition for gradients: attempt_backward,
judge_gradients (`conformance.compare_backward`), relabel; its results say `quantity = "backward"`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from conformance.case import Case
from conformance.compare_backward import judge_gradients
from conformance.contract import Backend, compute_format
from conformance.data import Cotangents, GruOutput, Inputs, Weights, case_data, make_cotangents
from conformance.diagnosis import diagnose_failure
from conformance.divergences import Divergence, Reproduces
from conformance.oracle import gru_reference
from conformance.oracle_backward import reference_gradients
from conformance.pipeline import Reference, attempt, attempt_backward, judge, relabel
from conformance.records import BACKWARD, FORWARD, Result, rerun_command
from conformance.time_limit import NO_LIMIT, TimeLimit
from conformance.tolerance import derive
from conformance.tolerance_backward import derive_backward
from conformance.variants import reproduces
from conformance.verdict import Verdict


@lru_cache(maxsize=64)
def oracle_reference(case: Case) -> tuple[Weights, Inputs, GruOutput]:
    """Weights, inputs and the float64 oracle's answer; computed once per case per process."""
    weights, inputs = case_data(case)
    return weights, inputs, gru_reference(case, weights, inputs)


def oracle_gradients(case: Case) -> tuple[Cotangents, dict[str, np.ndarray]]:
    """The backward check's cotangents and the float64 BPTT oracle's gradients (both cached per case)."""
    return make_cotangents(case), reference_gradients(case).tensors


ORACLE = Reference("oracle", oracle_reference, load_backward=oracle_gradients)


def check(
    backend: Backend,
    case: Case,
    reference: Reference = ORACLE,
    registry: list[Divergence] | None = None,
    precision: str = "strict",
    rerun_args: Sequence[str] = (),
    limit: TimeLimit = NO_LIMIT,
) -> Result:
    """`rerun_args` are the run's options a rerun needs besides backend, case and reference
    (`--backend-module`, a non-default `--divergences`); `limit` is the per-case time limit."""
    result = Result(
        case=case,
        backend=backend.name,
        family=backend.family,
        device=backend.device,
        verdict=Verdict.PASS,
        rerun=rerun_command(case, backend.name, precision, [*rerun_args, *reference.rerun_args], FORWARD),
        precision=precision,
        reference=reference.name,
    )
    started = time.perf_counter()
    weights, inputs, expected = reference.load(case)
    reference_s = time.perf_counter() - started
    tried = attempt(backend, case, weights, inputs, limit)
    result.timing = {"reference_s": reference_s, **tried.timing}
    if tried.output is None:
        result.verdict, result.reason = tried.verdict or Verdict.ERROR, tried.reason
    else:
        started = time.perf_counter()
        tolerance = derive(case, precision, compute_format(backend, case))
        judged = judge(case, expected, tried.output, tolerance, inputs.lengths)
        result.tolerance = tolerance.as_dict()
        result.verdict, result.checks, result.reason = judged.verdict, judged.checks, judged.reason
        result.timing["compare_s"] = time.perf_counter() - started
    relabel(result, registry or [], _variant_test(case, weights, inputs, expected, tried.output, result))
    if result.verdict == Verdict.FAIL and tried.output is not None and _numbers_differ(result):
        started = time.perf_counter()
        diagnosis = diagnose_failure(case, weights, inputs, expected, tried.output, tolerance.atol)
        result.diagnosis = diagnosis.as_dict()
        result.reason += f"\n{diagnosis.describe()}"
        result.timing["diagnose_s"] = time.perf_counter() - started
    return result


def check_backward(
    backend: Backend,
    case: Case,
    reference: Reference = ORACLE,
    registry: list[Divergence] | None = None,
    precision: str = "strict",
    rerun_args: Sequence[str] = (),
    limit: TimeLimit = NO_LIMIT,
) -> Result:
    """The backward check of one (backend, case): its gradients for the case's loss against the reference's,
    each tensor within its derived tolerance (`conformance.tolerance_backward`). Arguments as `check`.

    No diagnosis follows a failure: the semantic variants are forward mistakes; a gradient check
    names its tensor and worst element (gate, row, column; step, batch, feature) instead."""
    result = Result(
        case=case,
        backend=backend.name,
        family=backend.family,
        device=backend.device,
        verdict=Verdict.PASS,
        rerun=rerun_command(case, backend.name, precision, [*rerun_args, *reference.rerun_args], BACKWARD),
        precision=precision,
        reference=reference.name,
        quantity=BACKWARD,
    )
    started = time.perf_counter()
    weights, inputs, _ = reference.load(case)
    stored = None if reference.load_backward is None else reference.load_backward(case)
    result.timing = {"reference_s": time.perf_counter() - started}
    if stored is None:
        result.verdict = Verdict.SKIPPED
        result.reason = (
            f"{reference.name} holds no expected gradients for this case (vectors written before they were "
            "stored): regenerate them with `python -m conformance.vectors write`, or run --quantity forward"
        )
        return result
    cotangents, expected = stored
    tried = attempt_backward(backend, case, weights, inputs, cotangents, limit)
    result.timing.update(tried.timing)
    if tried.gradients is None:
        result.verdict, result.reason = tried.verdict or Verdict.ERROR, tried.reason
    else:
        started = time.perf_counter()
        tolerance = derive_backward(case, precision)
        judged = judge_gradients(case, expected, tried.gradients, tolerance, inputs.lengths)
        result.tolerance = tolerance.as_dict()
        result.verdict, result.checks, result.reason = judged.verdict, judged.checks, judged.reason
        result.timing["compare_s"] = time.perf_counter() - started
    relabel(result, registry or [])
    return result


def _variant_test(
    case: Case, weights: Weights, inputs: Inputs, expected: GruOutput, actual: GruOutput | None, result: Result
) -> Reproduces | None:
    """For registry entries bounded by a semantic variant: does that variant reproduce this output?"""
    if actual is None or result.tolerance is None:
        return None
    atol = result.tolerance["atol"]

    def test(variant_id: str, scale: float = 1.0) -> bool:
        return reproduces(variant_id, case, weights, inputs, actual, scale * atol, expected)

    return test


def _numbers_differ(result: Result) -> bool:
    """Worth diagnosing: an arithmetic or shape failure (a dtype-only failure has nothing to explain)."""
    return any(c.kind in ("arithmetic", "shape") for c in result.failing_checks)
