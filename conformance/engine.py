"""The oracle check: one (backend, case) against the float64 oracle (or stored vectors) -> a Result.

A composition of the pipeline's steps (`conformance.pipeline`): attempt, judge, relabel.
A backend that declares another GRU form (`form = Form(linear_before_reset=False)` on the
adapter: ONNX's default, Keras reset_after=False, haiku; or ONNX's activations and clip) is
judged against the oracle's recurrence in that form, its own semantics; the diagnosis then
asks whether it ignored part of what it declares.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import lru_cache

from conformance.case import Case
from conformance.compare import ZERO_LENGTH
from conformance.contract import Backend, declared_form
from conformance.data import GruOutput, Inputs, Weights, case_data
from conformance.diagnosis import diagnose_failure, empty_item_ran
from conformance.divergences import Divergence
from conformance.forms import PYTORCH, Form, gru
from conformance.oracle import gru_reference
from conformance.pipeline import Attempts, Reference, attempt, judge, relabel
from conformance.records import Result, rerun_command
from conformance.tolerance import derive
from conformance.verdict import Verdict


@lru_cache(maxsize=64)
def oracle_reference(case: Case) -> tuple[Weights, Inputs, GruOutput]:
    """Weights, inputs and the float64 oracle's answer; computed once per case per process."""
    weights, inputs = case_data(case)
    return weights, inputs, gru_reference(case, weights, inputs)


@lru_cache(maxsize=64)
def other_form_reference(case: Case, form: Form) -> tuple[Weights, Inputs, GruOutput]:
    """The same data through the oracle's recurrence in a declared form (`conformance.forms.gru`): the truth
    of a backend that declares another GRU (ONNX's default linear_before_reset=0, Keras reset_after=False,
    haiku; ONNX's activations and clip). The reset-before-matmul form is the oracle's own second form."""
    weights, inputs = case_data(case)
    if form == Form(linear_before_reset=False):
        return weights, inputs, gru_reference(case, weights, inputs, linear_before_reset=False)
    return weights, inputs, gru(case, weights, inputs, form)


ORACLE = Reference("oracle", oracle_reference, other_form=other_form_reference)


def check(
    backend: Backend,
    case: Case,
    reference: Reference = ORACLE,
    registry: list[Divergence] | None = None,
    precision: str = "strict",
    rerun_args: Sequence[str] = (),
    attempts: Attempts | None = None,
) -> Result:
    """`rerun_args` are the run's options a rerun needs besides backend, case and reference
    (`--backend-module`, a non-default `--divergences`); `attempts` keeps the run for the
    invariant checks of the same pair (`conformance.invariants`)."""
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
        attempt(backend, case, weights, inputs)
        if attempts is None
        else attempts.get(backend, case, precision, weights, inputs)
    )
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
    relabel(result, registry or [])
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


def _numbers_differ(result: Result) -> bool:
    """Worth diagnosing: an arithmetic or shape failure (a dtype-only failure has nothing to explain)."""
    return any(c.kind in ("arithmetic", "shape") for c in result.failing_checks)
