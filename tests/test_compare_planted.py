"""Planted wrong backends: each must be reported failing, with the worst element in the right place."""

from __future__ import annotations

import numpy as np
import pytest
from example_gru_backend.adapter import NumpyGru
from planted_backends import (
    DroppedBhn,
    GarbageInPadding,
    ReverseIgnoresLengths,
    SwappedHnDirections,
    SwappedRZ,
)

from conformance.case import Case
from conformance.compare import name_index, valid_mask
from conformance.divergences import Divergence
from conformance.engine import check, oracle_reference
from conformance.records import Check, Result

PACKED_BI = Case(3, 4, bidirectional=True, batch=4, seq_len=7, lengths="unsorted", initial_state=True)


def failing(result: Result) -> dict[str, Check]:
    return {c.name: c for c in result.checks if not c.passed}


def assert_worst_is_real(result: Result, backend: NumpyGru, name: str = "output") -> None:
    """The reported worst element is the true argmax of |actual - expected| over valid positions,
    recomputed here from the backend's own output and the oracle, independently of compare.py."""
    chk = next(c for c in result.checks if c.name == name)
    weights, inputs, expected = oracle_reference(result.case)
    actual = getattr(backend.run(result.case, weights, inputs), name)
    diff = np.abs(np.asarray(actual, np.float64) - getattr(expected, name))
    if name == "output":
        diff = np.where(valid_mask(result.case, inputs.lengths, diff.shape), diff, -1.0)
    index = np.unravel_index(int(np.argmax(diff)), diff.shape)
    assert chk.worst_index == name_index(result.case, name, tuple(int(i) for i in index))
    assert chk.max_abs == diff[index] and chk.actual == float(actual[index])
    assert chk.max_abs > chk.tolerance and chk.headroom > 1


def test_the_unplanted_example_passes() -> None:
    result = check(NumpyGru(), PACKED_BI)
    assert result.verdict == "pass", result.reason
    assert all(c.passed for c in result.checks)
    assert 0 <= result.worst_headroom < 1


@pytest.mark.parametrize("backend", [SwappedRZ(), DroppedBhn()], ids=lambda b: b.family)
def test_wrong_cell_math_fails_output_and_h_n(backend: NumpyGru) -> None:
    result = check(backend, PACKED_BI)
    assert result.verdict == "fail"
    bad = failing(result)
    assert {"output", "h_n"} <= set(bad) and all(c.kind == "arithmetic" for c in bad.values())
    assert_worst_is_real(result, backend)
    assert "worst element at [step=" in result.reason and "expected" in result.reason and "got" in result.reason


def test_dropped_b_hn_is_caught_even_without_packing() -> None:
    result = check(DroppedBhn(), Case(3, 4))
    assert result.verdict == "fail" and "output" in failing(result)


def test_reverse_direction_ignoring_lengths_points_at_backward_units_of_short_items() -> None:
    _weights, inputs, _ = oracle_reference(PACKED_BI)
    result = check(ReverseIgnoresLengths(), PACKED_BI)
    assert result.verdict == "fail"
    bad = failing(result)
    out, h_n = bad["output"], bad["h_n"]
    assert out.worst_index["direction"] == "backward"
    assert inputs.lengths[out.worst_index["batch"]] < PACKED_BI.seq_len
    assert h_n.worst_index["direction"] == "backward" and h_n.worst_index["layer"] == 0
    assert_worst_is_real(result, ReverseIgnoresLengths())
    assert_worst_is_real(result, ReverseIgnoresLengths(), "h_n")


def test_h_n_directions_swapped_fails_h_n_only() -> None:
    case = Case(3, 4, num_layers=2, bidirectional=True, batch=2, seq_len=5)
    result = check(SwappedHnDirections(), case)
    assert result.verdict == "fail"
    assert set(failing(result)) == {"h_n"}
    # The value reported at the worst element is the oracle's value for the OTHER direction there.
    h_n = failing(result)["h_n"]
    _weights, _inputs, expected = oracle_reference(case)
    where = h_n.worst_index
    other = where["layer"] * 2 + (0 if where["direction"] == "backward" else 1)
    assert h_n.actual == pytest.approx(expected.h_n[other, where["batch"], where["unit"]], abs=1e-6)


def test_garbage_in_padding_is_a_convention_difference_not_arithmetic() -> None:
    _weights, inputs, _ = oracle_reference(PACKED_BI)
    result = check(GarbageInPadding(), PACKED_BI)
    assert result.verdict == "convention"
    bad = failing(result)
    assert set(bad) == {"output.padding"} and bad["output.padding"].kind == "convention"
    where = bad["output.padding"].worst_index
    assert where["step"] >= inputs.lengths[where["batch"]]
    assert bad["output.padding"].actual == 0.75 and bad["output.padding"].expected == 0.0


def test_shape_and_dtype_mismatches_fail_first_and_say_what_was_expected() -> None:
    class WrongDtype(NumpyGru):
        def run(self, case, weights, inputs):  # type: ignore[no-untyped-def]
            out = super().run(case, weights, inputs)
            return type(out)(out.output.astype(np.float32), out.h_n[:1])

    case = Case(3, 4, num_layers=2, dtype="float64")
    result = check(WrongDtype(family="wrong-dtype"), case)
    assert result.verdict == "fail"
    bad = failing(result)
    assert bad["output.dtype"].message == "output dtype: expected float64, got float32"
    assert bad["h_n.shape"].message == "h_n shape: expected (2, 2, 4), got (1, 2, 4)"
    assert "h_n" not in bad  # numbers aren't compared across mismatched shapes


def test_a_crash_is_an_error_result_and_unsupported_quotes_the_reason() -> None:
    class Crashes(NumpyGru):
        def run(self, case, weights, inputs):  # type: ignore[no-untyped-def]
            raise RuntimeError("kernel exploded\nsecond line")

    class Refuses(NumpyGru):
        def supports(self, case):  # type: ignore[no-untyped-def]
            return "no packed sequences here"

    result = check(Crashes(family="crashes"), Case(3, 4))
    assert result.verdict == "error" and result.reason.startswith("RuntimeError: kernel exploded (at ")
    result = check(Refuses(family="refuses"), Case(3, 4))
    assert result.verdict == "unsupported" and result.reason == "no packed sequences here"


def test_registry_turns_a_listed_failure_into_known_divergence_and_notices_a_fix() -> None:
    entry = Divergence(id="rz", backends=("planted-swap-rz[*]",), reason="reads z before r", when={"bias": (True,)})
    assert check(SwappedRZ(), Case(3, 4), registry=[entry]).verdict == "known_divergence"
    assert check(SwappedRZ(), Case(3, 4, bias=False), registry=[entry]).verdict == "fail"  # outside `when`
    fixed = Divergence(id="fixed", backends=("numpy-example[cpu]",), reason="was broken once")
    result = check(NumpyGru(), Case(3, 4), registry=[fixed])
    assert result.verdict == "unexpected_pass" and "no longer reproduces" in result.reason
    narrow = Divergence(id="padding-only", backends=("*",), reason="pads", checks=("output.padding",))
    assert check(SwappedRZ(), Case(3, 4), registry=[narrow]).verdict == "fail"  # explains padding, not math
