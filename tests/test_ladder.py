"""The tier ladder: smoke < pairwise < triples < full, triples covers every possible triple, trace shapes are deliberate.

Coverage is checked against the values of the matrix, not against the full tier: a tuple of
values is needed when some possible case holds it (`Case.impossibility` decides), which only
the constrained dimensions (lengths, batch, seq_len) can rule out.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from conformance import matrix
from conformance.case import DEGENERATE_DIMS, OTHER_DIMS, Case, CaseError

CONSTRAINED = ("lengths", "batch", "seq_len")


def _possible(row: dict[str, Any], dims: dict[str, list[Any]]) -> bool:
    """Whether some case of the matrix holds these values: try every completion of the constrained dimensions."""
    free = [name for name in CONSTRAINED if name not in row]
    base = {name: values[0] for name, values in dims.items()}
    for values in itertools.product(*(dims[name] for name in free)):
        try:
            Case.from_dict({**base, **row, **dict(zip(free, values, strict=True))})
        except CaseError:
            continue
        return True
    return False


def needed(dims: dict[str, list[Any]], strength: int) -> set[tuple[Any, ...]]:
    """Every tuple (dim, value, dim, value, ...) of `strength` dimensions that some possible case holds."""
    found = set()
    for names in itertools.combinations(dims, strength):
        for values in itertools.product(*(dims[name] for name in names)):
            row = dict(zip(names, values, strict=True))
            if _possible(row, dims):
                found.add(tuple(itertools.chain.from_iterable(row.items())))
    return found


def covered(cases: list[Case], dims: dict[str, list[Any]], strength: int) -> set[tuple[Any, ...]]:
    return {
        tuple(itertools.chain.from_iterable((name, getattr(case, name)) for name in names))
        for case in cases
        for names in itertools.combinations(dims, strength)
    }


def test_triples_covers_every_possible_triple_and_pairwise_does_not() -> None:
    dims = matrix.load()["dimensions"]
    triples = matrix.cases("triples")
    want = needed(dims, 3)
    assert want - covered(triples, dims, 3) == set()
    # The counterpart: a strength-2 array leaves triples uncovered, and the check says so.
    assert want - covered(matrix.cases("pairwise"), dims, 3)
    assert matrix.cases("triples") == triples  # stable order, run to run


def test_the_ladder_grows_by_tier() -> None:
    sizes = {tier: len(matrix.cases(tier)) for tier in matrix.TIERS}
    assert sizes["smoke"] <= 10 < sizes["pairwise"] < 40 < sizes["triples"] < 150 < sizes["full"], sizes


def test_trace_shapes_are_the_run_shape_one_fixed_shape_and_the_degenerate_one() -> None:
    full = matrix.cases("full")
    dims = {case.export_dims for case in full if case.export_shape == "other"}
    assert dims == {OTHER_DIMS}  # independent of the run shape: one export serves every run shape
    assert {case.export_dims for case in full if case.export_shape == "degenerate"} == {DEGENERATE_DIMS}
    assert all(case.export_dims == (case.batch, case.seq_len) for case in full if case.export_shape == "same")
    assert all((case.batch, case.seq_len) != case.export_dims for case in full if case.export_shape == "other")
    odd = Case(2, 3, batch=OTHER_DIMS[0], seq_len=OTHER_DIMS[1], export_shape="other")
    assert odd.export_dims != (odd.batch, odd.seq_len)  # a case run at the fixed shape is traced elsewhere


@pytest.mark.parametrize("tier", ["pairwise", "triples"])
def test_a_model_traced_degenerate_and_run_elsewhere_is_in_the_tier(tier: str) -> None:
    cases = matrix.cases(tier)
    assert any(c.export_shape == "degenerate" and (c.batch, c.seq_len) != DEGENERATE_DIMS for c in cases)
    assert any(c.export_shape == "degenerate" and c.seq_len > 1 and c.packed for c in cases)


def test_old_ids_still_parse_and_the_new_value_round_trips() -> None:
    old = "I5H6-L1-bi-bf-bias-noh0-B3T5-dense-float32-xother-s0"
    assert Case.from_id(old).id == old and Case.from_id(old).export_shape == "other"
    new = Case(2, 3, export_shape="degenerate")
    assert new.id.endswith("-xdegenerate-s0") and Case.from_id(new.id) == new
    with pytest.raises(CaseError, match="export_shape must be one of same, other, degenerate"):
        Case(2, 3, export_shape="tiny")
