"""The oracle check: one (backend, case) against the float64 oracle (or stored vectors) -> a Result.

A composition of the pipeline's steps (`conformance.pipeline`): attempt, judge, relabel. The
backward check (`check_backward`) is the same composition for gradients: attempt_backward,
judge_gradients (`conformance.compare_backward`), relabel; its results say `quantity = "backward"`.
A backend that declares another GRU form (`form = Form(linear_before_reset=False)` on the
adapter: ONNX's default, Keras reset_after=False, haiku; or ONNX's activations and clip) is
judged against the oracle's recurrence in that form, its own semantics; the diagnosis then
asks whether it ignored part of what it declares.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from conformance.case import Case
from conformance.compare import ZERO_LENGTH
from conformance.compare_backward import judge_gradients
from conformance.contract import Backend, compute_format, declared_form
from conformance.data import Cotangents, GruOutput, Inputs, Weights, case_data, make_cotangents
from conformance.diagnosis import SEQUENCE_LENS, diagnose_failure, empty_item_ran, ignored_attributes
from conformance.divergences import Divergence, Reproduces
from conformance.forms import PYTORCH, Form, gru
from conformance.oracle import gru_reference
from conformance.oracle_backward import reference_gradients
from conformance.pipeline import Attempts, Reference, attempt, attempt_backward, judge, relabel
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


@lru_cache(maxsize=64)
def other_form_reference(case: Case, form: Form) -> tuple[Weights, Inputs, GruOutput]:
    """The same data through the oracle's recurrence in a declared form (`conformance.forms.gru`): the truth
    of a backend that declares another GRU (ONNX's default linear_before_reset=0, Keras reset_after=False,
    haiku; ONNX's activations and clip). The reset-before-matmul form is the oracle's own second form."""
    weights, inputs = case_data(case)
    if form == Form(linear_before_reset=False):
        return weights, inputs, gru_reference(case, weights, inputs, linear_before_reset=False)
    return weights, inputs, gru(case, weights, inputs, form)


ORACLE = Reference("oracle", oracle_reference, load_backward=oracle_gradients, other_form=other_form_reference)


def check(
    backend: Backend,
    case: Case,
    reference: Reference = ORACLE,
    registry: list[Divergence] | None = None,
    precision: str = "strict",
    rerun_args: Sequence[str] = (),
    limit: TimeLimit = NO_LIMIT,
    attempts: Attempts | None = None,
) -> Result:
    """`rerun_args` are the run's options a rerun needs besides backend, case and reference
    (`--backend-module`, a non-default `--divergences`); `limit` is the per-case time limit;
    `attempts` keeps the run for the invariant checks of the same pair (`conformance.invariants`)."""
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
    form = declared_form(backend)
    if form != PYTORCH and reference.other_form is None:
        result.verdict = Verdict.UNSUPPORTED
        result.reason = f"{reference.name} holds PyTorch's GRU form only; {backend.name} declares {form.describe()}"
        return result
    started = time.perf_counter()
    if form == PYTORCH or reference.other_form is None:
        weights, inputs, expected = reference.load(case)
    else:
        weights, inputs, expected = reference.other_form(case, form)
    reference_s = time.perf_counter() - started
    tried = (
        attempt(backend, case, weights, inputs, limit)
        if attempts is None
        else attempts.get(backend, case, precision, weights, inputs, limit)
    )
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
    relabel(result, registry or [], _variant_test(case, weights, inputs, expected, tried.output, result, form))
    empty = next((c for c in result.failing_checks if c.name == ZERO_LENGTH), None)
    if empty is not None and tried.output is not None:  # name what came back more exactly than compare can
        ran = empty_item_ran(case, weights, inputs, tried.output, tolerance.atol, form)
        if ran:
            said = empty.message.split(";")[0]
            empty.message = ran + empty.message[len(said) :]
            result.reason = result.reason.replace(said, ran, 1)
    if result.verdict == Verdict.FAIL and tried.output is not None and _numbers_differ(result):
        started = time.perf_counter()
        diagnosis = diagnose_failure(case, weights, inputs, expected, tried.output, tolerance.atol, form)
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
    form = declared_form(backend)
    if form != PYTORCH:
        result.verdict = Verdict.UNSUPPORTED
        result.reason = (
            f"the backward check holds PyTorch's GRU form only (the BPTT oracle); {backend.name} declares "
            f"{form.describe()}"
        )
        return result
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
        if result.verdict == Verdict.FAIL and case.lengths == "zero":
            _zero_length_backward(backend, case, reference, precision, limit, result)
    relabel(result, registry or [])
    return result


def _zero_length_backward(
    backend: Backend, case: Case, reference: Reference, precision: str, limit: TimeLimit, result: Result
) -> None:
    """A batch with an item of length 0: where the backend's forward returns something other than the policy
    for that item (a convention, `h_n.zero-length`), its gradients differentiate that other function, so
    they are that convention too, not a failure; where its forward follows the policy, a failure stays one."""
    forward = check(backend, case, reference, precision=precision, limit=limit)
    empty = next((c for c in forward.failing_checks if c.name == ZERO_LENGTH), None)
    if forward.verdict != Verdict.CONVENTION or empty is None:
        return
    result.verdict = Verdict.CONVENTION
    result.reason = (
        f"the gradients of what this backend returns for an item of length 0 ({empty.message.split(';')[0]}), "
        f"not of the zero-length policy: the forward convention, differentiated\n{result.reason}"
    )


def _variant_test(
    case: Case,
    weights: Weights,
    inputs: Inputs,
    expected: GruOutput,
    actual: GruOutput | None,
    result: Result,
    form: Form = PYTORCH,
) -> Reproduces | None:
    """For registry entries bounded by a semantic variant: does that variant reproduce this output? For a
    backend declaring another form, the variants are its declared attributes ignored (`ignores-<attribute>`)."""
    if actual is None or result.tolerance is None:
        return None
    atol = result.tolerance["atol"]

    def test(variant_id: str, scale: float = 1.0) -> bool:
        if form != PYTORCH:
            if variant_id == "lengths-ignored":  # the same mistake, in the form the backend declares
                variant_id = f"ignores-{SEQUENCE_LENS}"
            found = ignored_attributes(case, weights, inputs, expected, actual, scale * atol, form)
            return any(match.id == variant_id for match in found)
        return reproduces(variant_id, case, weights, inputs, actual, scale * atol, expected)

    return test


def _numbers_differ(result: Result) -> bool:
    """Worth diagnosing: an arithmetic or shape failure (a dtype-only failure has nothing to explain)."""
    return any(c.kind in ("arithmetic", "shape") for c in result.failing_checks)
