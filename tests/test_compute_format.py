"""A backend's stated compute format (`StatesComputeFormat`): default mode derives the tolerance for it, strict never does."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from example_gru_backend.adapter import NumpyGru

from conformance.case import Case
from conformance.contract import compute_format
from conformance.dtypes import fmt, quantize
from conformance.engine import check
from conformance.tolerance import derive
from conformance.verdict import Verdict

CASE = Case(5, 16, seq_len=40, batch=3, initial_state=True)


@dataclass
class StateInBfloat16(NumpyGru):
    """Computes a float32 case with its state stored in bfloat16 between steps, and says nothing."""

    family: str = "planted-bf16-silent"

    def cell(self, x, h, w_ih, w_hh, b_ih, b_hh):  # type: ignore[no-untyped-def]
        return quantize(super().cell(x, h, w_ih, w_hh, b_ih, b_hh), "bfloat16").astype(np.float32)


@dataclass
class StatesBfloat16(StateInBfloat16):
    """The same arithmetic, stated: what OpenVINO's column does with its detected inference precision."""

    family: str = "planted-bf16-stated"

    def compute_format(self, case: Case) -> str | None:
        return "bfloat16"


def test_default_mode_derives_the_stated_format() -> None:
    tol = derive(CASE, "default", "bfloat16")
    assert tol.unit_roundoff == fmt("bfloat16").unit_roundoff and tol.accumulate_format == "float32"
    assert tol.atol > derive(CASE, "default").atol  # wider than TF32's, which only rounds the accumulation


def test_a_stated_format_is_ignored_in_strict_mode_and_for_float64() -> None:
    assert derive(CASE, "strict", "bfloat16") == derive(CASE, "strict")
    wide = Case(**{**CASE.as_dict(), "dtype": "float64"})
    assert derive(wide, "default", "float32") == derive(wide, "default") == derive(wide)


def test_stating_float32_in_default_mode_gives_the_float32_tolerance() -> None:
    """A runtime that computes float32 out of the box (OpenVINO on a CPU without BF16) gets no TF32 allowance."""
    assert derive(CASE, "default", "float32").atol == derive(CASE).atol


def test_only_a_backend_that_states_it_is_asked() -> None:
    assert compute_format(StatesBfloat16(), CASE) == "bfloat16"
    assert compute_format(StateInBfloat16(), CASE) is None


def test_the_engine_derives_default_mode_for_the_stated_format_and_strict_for_the_dtype() -> None:
    stated = check(StatesBfloat16(), CASE, precision="default")
    assert stated.verdict == Verdict.PASS and stated.tolerance["unit_roundoff"] == fmt("bfloat16").unit_roundoff
    assert check(StateInBfloat16(), CASE, precision="default").tolerance["accumulate_format"] == "tf32"
    strict = check(StatesBfloat16(), CASE, precision="strict")  # planted: bfloat16 arithmetic where float32 is asked
    assert strict.verdict == Verdict.FAIL and strict.worst_headroom > 10
