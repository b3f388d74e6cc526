"""The backward check as one function, for the tests until the pipeline runs it: (backend, case) -> Result.

attempt (refusal, then `run_backward`), judge (`judge_gradients` against `reference_gradients`
with `derive_backward`'s tolerances), exactly the forward check's steps. A backend that isn't
`Differentiable` is unsupported for backward, with the reason.
"""

from __future__ import annotations

import time

from conformance.case import Case
from conformance.compare_backward import judge_gradients
from conformance.contract import Backend, Differentiable, UnsupportedCase, first_line
from conformance.data import case_data, make_cotangents
from conformance.oracle_backward import reference_gradients
from conformance.pipeline import refusal
from conformance.records import Result
from conformance.tolerance_backward import derive_backward
from conformance.verdict import Verdict


def check_backward(backend: Backend, case: Case, precision: str = "strict") -> Result:
    result = Result(case, backend.name, backend.family, backend.device, Verdict.PASS, precision=precision)
    refused = refusal(backend, case)
    if refused is not None:
        result.verdict, result.reason = refused.verdict or Verdict.ERROR, refused.reason
        return result
    if not isinstance(backend, Differentiable):
        result.verdict = Verdict.UNSUPPORTED
        result.reason = f"{backend.name} does not differentiate: it has no run_backward"
        return result
    weights, inputs = case_data(case)
    started = time.perf_counter()
    try:
        actual = backend.run_backward(case, weights, inputs, make_cotangents(case))
    except UnsupportedCase as error:
        result.verdict, result.reason = Verdict.UNSUPPORTED, str(error)
        return result
    except Exception as error:  # a backend crash is a result
        result.verdict, result.reason = Verdict.ERROR, f"{first_line(error)} (in run_backward)"
        return result
    result.timing = {"backend_s": time.perf_counter() - started}
    tolerance = derive_backward(case, precision)
    judged = judge_gradients(case, reference_gradients(case).tensors, actual, tolerance, inputs.lengths)
    result.verdict, result.checks, result.reason = judged.verdict, judged.checks, judged.reason
    result.tolerance = tolerance.as_dict()
    return result
