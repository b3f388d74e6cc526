"""Verdicts that must not be softened: each test here kills a mutation that once survived the suite.

Mutation testing of the verdict-deciding code found changes no test noticed: padding allowed to be
nonzero within atol, NaN errors counted as zero, the worst element picked without the valid/padding
mask, h_n's dtype unchecked, `unexpected_pass` or `convention` let through by the test function,
convention ranked above an arithmetic failure, and the vectors verifier accepting 2.5x its tolerance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from planted_backends import NonFiniteOutput, TinyPadding, WrongHnDtype, WrongNumbersAndPadding

from conformance.case import Case
from conformance.compare import compare
from conformance.data import GruOutput
from conformance.engine import check, oracle_reference
from conformance.plugin import enact
from conformance.records import Check, CrossDeviceResult, Result
from conformance.test_cross_device import test_cross_device as cross_device_test_function
from conformance.test_gru import test_gru as gru_test_function
from conformance.tolerance import derive
from conformance.vectors import load_case, load_manifest, verify, write_outputs
from conformance.verdict import Verdict

PACKED = Case(3, 4, bidirectional=True, batch=4, seq_len=7, lengths="unsorted", initial_state=True)
EXPECTED_OUTCOME = {
    Verdict.PASS: "passed",
    Verdict.FAIL: "failed",
    Verdict.ERROR: "failed",
    Verdict.UNEXPECTED_PASS: "failed",
    Verdict.KNOWN_DIVERGENCE: "xfailed",
    Verdict.CONVENTION: "xfailed",
    Verdict.UNSUPPORTED: "skipped",
    Verdict.SKIPPED: "skipped",
}


def checks_by_name(result: Result) -> dict[str, Check]:
    return {c.name: c for c in result.checks}


def outcome_of(call: Any) -> str:
    """What pytest would report for a test body: passed, failed, xfailed or skipped."""
    try:
        call()
    except pytest.xfail.Exception:  # a subclass of pytest.fail.Exception: test it first
        return "xfailed"
    except pytest.fail.Exception:
        return "failed"
    except pytest.skip.Exception:
        return "skipped"
    return "passed"


def test_every_verdict_has_its_outcome_defined_once() -> None:
    assert {v: v.outcome for v in Verdict} == EXPECTED_OUTCOME
    assert {v for v in Verdict if v.failing} == {Verdict.FAIL, Verdict.ERROR, Verdict.UNEXPECTED_PASS}
    assert [v.severity for v in Verdict] == sorted(v.severity for v in Verdict)
    with pytest.raises(ValueError, match="unknown verdict 'passed'; valid: error, fail"):
        Verdict.parse("passed")


class _Run:
    """Stands in for the plugin's run object: hands the test function a result of a chosen verdict."""

    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict

    def check(self, backend: Any, case: Case) -> Result:
        return Result(case, "b[cpu]", "b", "cpu", self.verdict, reason="why")

    def check_devices(self, pair: Any, case: Case) -> CrossDeviceResult:
        return CrossDeviceResult(case, "b", ("b[cpu]", "b[cuda]"), ("cpu", "cuda"), self.verdict, "strict")


@pytest.mark.parametrize("verdict", list(Verdict), ids=str)
def test_both_test_functions_report_each_verdict_as_its_outcome(verdict: Verdict) -> None:
    """Kills the mutations that let `unexpected_pass` or `convention` pass in `conformance/test_gru.py`."""
    case, run = Case(3, 4), _Run(verdict)
    assert outcome_of(lambda: enact(verdict, "why")) == EXPECTED_OUTCOME[verdict]
    assert outcome_of(lambda: gru_test_function(case, None, run)) == EXPECTED_OUTCOME[verdict]  # type: ignore[arg-type]
    pair = type("Pair", (), {"id": "b[cpu]-vs-b[cuda]"})()
    assert outcome_of(lambda: cross_device_test_function(case, pair, run)) == EXPECTED_OUTCOME[verdict]  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=str)
def test_a_non_finite_output_fails_with_infinite_error_at_its_element(value: float) -> None:
    result = check(NonFiniteOutput(value=value), PACKED)
    output = checks_by_name(result)["output"]
    assert result.verdict == Verdict.FAIL and not output.passed
    assert output.max_abs == float("inf") and output.headroom == float("inf")
    assert output.worst_index == {"step": 0, "batch": 0, "unit": 0, "direction": "forward"}
    assert f"got {value!r}" in output.message


def test_padding_must_be_exactly_zero_not_merely_within_tolerance() -> None:
    result = check(TinyPadding(), PACKED)
    padding = checks_by_name(result)["output.padding"]
    assert result.verdict == Verdict.CONVENTION
    assert padding.tolerance == 0.0 and padding.max_abs == pytest.approx(1e-12)
    assert checks_by_name(result)["output"].passed  # valid positions are right


def test_a_wrong_h_n_dtype_fails_on_its_own() -> None:
    result = check(WrongHnDtype(), Case(3, 4, num_layers=2))
    failing = {c.name for c in result.checks if not c.passed}
    assert result.verdict == Verdict.FAIL and failing == {"h_n.dtype"}
    assert checks_by_name(result)["h_n.dtype"].message == "h_n dtype: expected float32, got float64"


def test_wrong_numbers_with_padding_garbage_are_a_failure_not_a_convention() -> None:
    _weights, inputs, _ = oracle_reference(PACKED)
    result = check(WrongNumbersAndPadding(), PACKED)
    checks = checks_by_name(result)
    assert result.verdict == Verdict.FAIL
    assert not checks["output"].passed and not checks["output.padding"].passed
    # The padding garbage (0.75) is larger than any arithmetic error here; the worst element of
    # the arithmetic check must still be a valid position, chosen under the valid mask.
    where = checks["output"].worst_index
    assert where is not None and where["step"] < inputs.lengths[where["batch"]]
    assert checks["output"].max_abs < 0.75


@pytest.mark.parametrize("factor, verdict", [(0.5, Verdict.PASS), (1.5, Verdict.FAIL)])
def test_the_vectors_verifier_holds_the_recorded_tolerance(factor: float, verdict: Verdict, tmp_path: Path) -> None:
    """An error of 1.5 atol at one element fails; 0.5 atol passes (a verifier loosened to 2.5x would pass both)."""
    root = Path(__file__).resolve().parent.parent / "fixtures" / "vectors" / "pairwise"
    manifest = load_manifest(root)
    case_id = next(cid for cid in manifest.cases if manifest.entry(cid).case.dtype == "float64")
    case = manifest.entry(case_id).case
    atol = manifest.entry(case_id).tolerance["strict"]["atol"]
    _weights, _inputs, expected = load_case(manifest, case_id)
    output = np.array(expected.output)
    output[(0,) * output.ndim] += factor * atol
    write_outputs(tmp_path, case, GruOutput(output, expected.h_n))
    (result,) = verify(manifest, tmp_path, [case_id], quantities=("forward",))
    assert result.verdict == verdict, result.reason
    assert result.worst_headroom == pytest.approx(factor, rel=0.02)  # atol is ~100 float64 ULPs: 1% rounding


def test_a_single_wrong_element_is_measured_exactly() -> None:
    """max abs, max rel, max ULP, headroom and the message, recomputed by hand for one planted error."""
    from conformance.dtypes import ulp

    case = Case(3, 4, batch=2, seq_len=3, dtype="float64")
    _weights, _inputs, expected = oracle_reference(case)
    actual = np.array(expected.output)
    where = (1, 1, 2)
    delta = 1e-6
    actual[where] += delta
    tolerance = derive(case)
    checks = {c.name: c for c in compare(case, expected, GruOutput(actual, expected.h_n), tolerance, None)}
    out = checks["output"]
    err = float(actual[where] - expected.output[where])
    assert out.max_abs == err and out.headroom == err / tolerance.atol
    assert out.max_rel == err / abs(float(expected.output[where]))
    assert out.max_ulp == err / float(ulp(np.float64(expected.output[where]), "float64"))
    assert out.worst_index == {"step": 1, "batch": 1, "unit": 2}
    assert (out.expected, out.actual) == (float(expected.output[where]), float(actual[where]))
    assert out.message == (
        f"output: worst element at [step=1, batch=1, unit=2]: expected {float(expected.output[where])!r}, "
        f"got {float(actual[where])!r}; abs err {err:.3g} > tolerance {tolerance.atol:.3g} "
        f"(headroom {err / tolerance.atol:.3g}), max rel err {out.max_rel:.3g}, max {out.max_ulp:.3g} ULP"
    )
    assert checks["h_n"].passed and checks["h_n"].max_abs == 0.0 and checks["h_n"].headroom == 0.0
    assert "abs err 0 <= tolerance" in checks["h_n"].message


def test_a_packed_batch_without_padding_has_an_empty_padding_check() -> None:
    """lengths = full: nothing is padded, so the padding check passes on no elements, with zero error."""
    case = Case(3, 4, batch=2, seq_len=3, lengths="full")
    result = check(TinyPadding(), case)  # no zero outputs to overwrite: nothing is planted
    padding = checks_by_name(result)["output.padding"]
    assert (padding.passed, padding.message, padding.max_abs, padding.tolerance, padding.headroom) == (
        True,
        "no elements",
        0.0,
        0.0,
        0.0,
    )
    assert result.verdict == Verdict.PASS


def test_verdict_names_are_checked_where_they_are_read() -> None:
    with pytest.raises(ValueError, match=r"^results.jsonl:3: unknown verdict 'ok'; valid: error, fail, "):
        Verdict.parse("ok", "results.jsonl:3")
    assert Verdict.parse("known_divergence") is Verdict.KNOWN_DIVERGENCE
