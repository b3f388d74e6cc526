"""`--explain` probing: the single changes that make a failing case pass are the failure's trigger."""

from __future__ import annotations

from planted_backends import SwappedRZ
from planted_mistakes import WrongWhenBatchFirstAndPacked, WrongWhenBidirectional

from conformance import matrix
from conformance.case import Case
from conformance.engine import check
from conformance.probing import neighbours, probe
from conformance.verdict import Verdict

DIMENSIONS = matrix.load()["dimensions"]
BASE = Case(5, 6, num_layers=2, bidirectional=True, batch_first=True, batch=3, seq_len=5, lengths="sorted")


def test_neighbours_change_exactly_one_field_and_skip_impossible_cases() -> None:
    found = neighbours(BASE, DIMENSIONS)
    for name, value, case in found:
        assert getattr(case, name) == value != getattr(BASE, name)
        assert [f for f in DIMENSIONS if getattr(case, f) != getattr(BASE, f)] == [name]
    assert ("batch", 1) not in {(n, v) for n, v, _ in found}  # sorted lengths need batch >= 2
    assert len(found) == sum(len(v) - 1 for v in DIMENSIONS.values()) - 2  # batch 1 and seq_len 1 are impossible


def test_a_bug_that_needs_one_field_is_traced_to_it() -> None:
    backend = WrongWhenBidirectional()
    assert check(backend, BASE).verdict == Verdict.FAIL
    found = probe(backend.name, [BASE], DIMENSIONS, lambda c: check(backend, c), budget=100)
    assert [(t[0], t[1]) for t in found.triggers()] == [("bidirectional", True)]
    assert "the failure needs bidirectional = True (changing it passes 1 of 1)" in found.describe()


def test_a_bug_that_needs_two_fields_is_traced_to_both() -> None:
    backend = WrongWhenBatchFirstAndPacked()
    assert check(backend, BASE).verdict == Verdict.FAIL
    found = probe(backend.name, [BASE], DIMENSIONS, lambda c: check(backend, c), budget=100)
    assert {(t[0], t[1]) for t in found.triggers()} == {("batch_first", True), ("lengths", "sorted")}
    lengths = next(t for t in found.triggers() if t[0] == "lengths")
    assert lengths[2:] == (1, 3)  # only dense cures it; unsorted and full are packed too


def test_a_bug_everywhere_has_no_single_trigger_and_the_budget_holds() -> None:
    backend = SwappedRZ()
    found = probe(backend.name, [BASE, Case(3, 4)], DIMENSIONS, lambda c: check(backend, c), budget=7)
    assert len(found.neighbours) == 7 and found.exhausted and found.cases == [BASE.id]
    assert found.triggers() == []
    assert "budget 7 reached" in found.describe() and "no single change makes a failure pass" in found.describe()
