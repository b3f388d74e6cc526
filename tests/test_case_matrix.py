"""Cases, ids and tiers: ids round-trip, tiers hold what they promise, bad files fail clearly."""

from __future__ import annotations

import contextlib
import itertools
from pathlib import Path

import pytest

from conformance import matrix
from conformance.case import Case, CaseError


def test_id_round_trips_for_every_pairwise_case() -> None:
    for case in matrix.cases("pairwise", seed=7):
        assert Case.from_id(case.id) == case


def test_bad_case_ids_and_impossible_cases_are_errors() -> None:
    with pytest.raises(CaseError, match="not a case id"):
        Case.from_id("I4H8-bogus")
    with pytest.raises(CaseError, match="two different lengths"):
        Case(2, 3, batch=1, lengths="sorted")
    with pytest.raises(CaseError, match="two different lengths"):
        Case(2, 3, seq_len=1, lengths="unsorted")


def test_smoke_is_small_and_full_is_the_valid_cross_product() -> None:
    data = matrix.load()
    assert len(matrix.cases("smoke")) <= 10
    dims = data["dimensions"]
    product = [dict(zip(dims, values, strict=True)) for values in itertools.product(*dims.values())]
    possible = []
    for row in product:
        with contextlib.suppress(CaseError):
            possible.append(Case.from_dict(row))
    assert len(possible) < len(product)  # the matrix does contain impossible combinations...
    assert matrix.cases("full") == possible  # ...and full holds exactly the possible ones


def test_pairwise_covers_every_possible_pair() -> None:
    dims = matrix.load()["dimensions"]
    full = matrix.cases("full")
    names = list(dims)
    needed = {(a, getattr(c, a), b, getattr(c, b)) for c in full for a, b in itertools.combinations(names, 2)}
    pairwise = matrix.cases("pairwise")
    covered = {(a, getattr(c, a), b, getattr(c, b)) for c in pairwise for a, b in itertools.combinations(names, 2)}
    assert needed - covered == set()
    assert len(pairwise) < 40
    assert matrix.cases("pairwise") == pairwise  # stable order, run to run


def test_edge_values_are_in_the_matrix() -> None:
    cases = matrix.cases("pairwise")
    assert any(c.seq_len == 1 for c in cases)
    assert any(c.batch == 1 for c in cases)
    assert any(c.hidden_size == 1 for c in cases)
    assert any(c.seq_len >= 256 for c in cases)
    assert any(c.lengths == "full" for c in cases)
    assert any(c.lengths == "unsorted" for c in cases)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("this is = not toml [", "not valid TOML"),
        ("[other]\nx = 1\n", "missing \\[dimensions\\]"),
        ("[dimensions]\nbogus = [1]\n", "unknown: bogus.*Valid dimensions"),
        ("[dimensions]\ninput_size = []\n", "missing:"),
    ],
)
def test_malformed_matrix_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "matrix.toml"
    path.write_text(text)
    with pytest.raises(matrix.MatrixError, match=message):
        matrix.cases("smoke", path=path)


def test_matrix_values_of_the_wrong_type_are_rejected(tmp_path: Path) -> None:
    text = (matrix.DEFAULT_MATRIX.read_text()).replace('dtype = ["float32"', 'dtype = ["float31"')
    path = tmp_path / "matrix.toml"
    path.write_text(text)
    with pytest.raises(matrix.MatrixError, match="dtype must be one of"):
        matrix.cases("pairwise", path=path)
    with pytest.raises(matrix.MatrixError, match="unknown tier 'huge'; valid tiers: smoke, pairwise, triples, full"):
        matrix.cases("huge")
