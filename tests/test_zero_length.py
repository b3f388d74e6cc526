"""Zero-length sequences: the policy (outputs 0, h_n = h0), each behaviour named, the other items judged.

No two libraries agree on an empty sequence, so a different h_n for the empty item is recorded as the
backend's convention, named by what came back; a wrong result for any other item is a failure.
"""

from __future__ import annotations

import numpy as np
import pytest
from example_gru_backend.adapter import NumpyGru
from planted_backends import EmptyItemRunsFully, EmptyItemShiftsOthers, EmptyItemStateZeroed

from conformance import engine, matrix
from conformance.case import Case, CaseError
from conformance.data import case_data
from conformance.oracle import gru_reference
from conformance.verdict import Verdict

H0 = Case(3, 4, bidirectional=True, batch=3, seq_len=5, lengths="zero", initial_state=True)
NO_H0 = Case(3, 4, num_layers=2, batch_first=True, batch=4, seq_len=6, lengths="zero")


def test_zero_lengths_hold_an_empty_item_beside_a_full_one() -> None:
    for case in (H0, NO_H0):
        lengths = case_data(case)[1].lengths
        assert lengths is not None and lengths[0] == 0 and lengths[-1] == case.seq_len and (lengths[1:] > 0).all()
        assert Case.from_id(case.id) == case and "-zero-" in case.id and not case.enforce_sorted
    assert Case(3, 4, batch=2, seq_len=1, lengths="zero").id.endswith("B2T1-zero-float32-xsame-s0")
    with pytest.raises(CaseError, match="'zero' lengths need an item of length 0 beside one that runs"):
        Case(3, 4, batch=1, lengths="zero")


@pytest.mark.parametrize("case", [H0, NO_H0], ids=["h0", "noh0"])
def test_the_oracle_policy_empty_outputs_are_zero_and_h_n_is_h0(case: Case) -> None:
    weights, inputs = case_data(case)
    truth = gru_reference(case, weights, inputs)
    empty = np.asarray(truth.output)[0] if case.batch_first else np.asarray(truth.output)[:, 0]
    assert not empty.any()
    h0 = np.zeros_like(truth.h_n[:, 0]) if inputs.h0 is None else inputs.h0[:, 0]
    assert np.array_equal(truth.h_n[:, 0], np.asarray(h0, dtype=np.float64))


@pytest.mark.parametrize("case", [H0, NO_H0], ids=["h0", "noh0"])
def test_following_the_policy_passes(case: Case) -> None:
    assert engine.check(NumpyGru(), case).verdict == Verdict.PASS


def test_a_zeroed_state_is_a_convention_that_says_so() -> None:
    result = engine.check(EmptyItemStateZeroed(), H0)
    assert result.verdict == Verdict.CONVENTION
    assert [c.name for c in result.failing_checks] == ["h_n.zero-length"]
    assert result.reason.startswith("h_n of a length-0 item is 0, not h0; h_n.zero-length: worst element at [layer=0")
    assert "batch=0" in result.reason
    assert engine.check(EmptyItemStateZeroed(), NO_H0).verdict == Verdict.PASS  # without h0, 0 is the policy


def test_an_empty_item_that_runs_is_named_too() -> None:
    result = engine.check(EmptyItemRunsFully(), H0)
    assert result.verdict == Verdict.CONVENTION
    assert {c.name for c in result.failing_checks} == {"h_n.zero-length", "output.padding"}
    # compare says "neither h0 nor 0"; the engine finds which state it is (flax-linen returns this one)
    assert "h_n of a length-0 item is the state after all 5 steps (it ran), not h0; h_n.zero-length:" in result.reason
    zero = next(c for c in result.checks if c.name == "h_n.zero-length")
    assert zero.message.startswith("h_n of a length-0 item is the state after all 5 steps (it ran), not h0;")


def test_other_items_wrong_is_a_failure() -> None:
    result = engine.check(EmptyItemShiftsOthers(), H0)
    assert result.verdict == Verdict.FAIL
    assert {"output", "h_n"} <= {c.name for c in result.failing_checks}


def test_torch_refuses_an_empty_sequence_in_its_own_words() -> None:
    pytest.importorskip("torch")
    from backends.torch_eager import TorchGru

    result = engine.check(TorchGru(), H0)
    assert result.verdict == Verdict.UNSUPPORTED
    assert result.reason == (
        "RuntimeError: Length of all samples has to be greater than 0, but found an element in 'lengths' that is <= 0"
    )


def test_every_tier_adds_the_declared_zero_length_cases_and_keeps_its_own() -> None:
    declared = matrix.zero_length()
    assert {c.initial_state for c in declared} == {True, False} and all(c.lengths == "zero" for c in declared)
    for tier in matrix.TIERS[:2]:
        assert not [c for c in matrix.cases(tier) if c.lengths == "zero"]  # the tier's own cases: as they were
