"""Derived tolerances: stable, meaningful on long low-precision cases, and tight enough to catch precision bugs."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from example_gru_backend.adapter import NumpyGru
from planted_backends import SwappedRZ

from conformance.case import Case
from conformance.dtypes import quantize
from conformance.engine import check
from conformance.tolerance import LAMBDA, derive, error_gain

LONG_BF16 = Case(2, 6, num_layers=2, batch=3, seq_len=260, lengths="sorted", initial_state=True, dtype="bfloat16")


def test_the_gain_is_deterministic_and_below_the_random_walk_bound_on_long_sequences() -> None:
    error_gain.cache_clear()
    first = error_gain(LONG_BF16)
    error_gain.cache_clear()
    assert error_gain(LONG_BF16) == first
    steps = LONG_BF16.seq_len * LONG_BF16.num_layers
    assert 1.0 <= first < math.sqrt(steps) / 4  # this GRU contracts: errors don't random-walk
    tol = derive(LONG_BF16)
    assert tol.atol == LAMBDA * (3 * tol.unit_roundoff + math.sqrt(tol.dot_length) * tol.accumulate_roundoff) * first
    assert tol.atol < 0.15  # meaningful for values in (-1, 1), even for bfloat16 over 520 steps


def test_default_precision_allows_tf32_for_float32_only() -> None:
    case = Case(3, 4, seq_len=7)
    strict, default = derive(case), derive(case, "default")
    assert default.accumulate_format == "tf32" and strict.accumulate_format == "float32"
    assert default.atol > 100 * strict.atol
    assert derive(Case(3, 4, dtype="float64"), "default") == derive(Case(3, 4, dtype="float64"))


def test_a_gate_swap_is_caught_even_in_bfloat16_over_a_long_sequence() -> None:
    result = check(SwappedRZ(), LONG_BF16)
    assert result.verdict == "fail", result.reason


@dataclass
class StateInBfloat16(NumpyGru):
    """Claims float32 but keeps its state in bfloat16 between steps: a precision bug."""

    family: str = "planted-bf16-state"

    def cell(self, x, h, w_ih, w_hh, b_ih, b_hh):  # type: ignore[no-untyped-def]
        return quantize(super().cell(x, h, w_ih, w_hh, b_ih, b_hh), "bfloat16").astype(np.float32)


def test_a_backend_computing_in_lower_precision_than_asked_fails() -> None:
    case = Case(5, 16, seq_len=40, batch=3, initial_state=True)
    assert check(NumpyGru(), case).verdict == "pass"
    result = check(StateInBfloat16(), case)
    assert result.verdict == "fail" and result.worst_headroom > 10
