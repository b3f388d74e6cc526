"""Diagnosis: planted mistakes are named by their variant, precision problems by their format,
failure sets by the condition that selects them; correct backends get nothing.

The planted backends (`tests/planted_mistakes.py`, `tests/planted_backends.py`) are NumPy GRUs
written apart from `conformance.forms`, computing in float32, so a diagnosis here has to see
through real rounding, not recognise a variant as itself.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace

import numpy as np
import pytest
from example_gru_backend.adapter import NumpyGru
from planted_backends import DroppedBhn, ReverseIgnoresLengths, SwappedHnDirections, SwappedRZ
from planted_mistakes import (
    MISTAKES,
    Bfloat16Inside,
    CandidateFirstGateOrder,
    Float32Everywhere,
    Float64ThenRounded,
    FusedGateMatmul,
    KerasGateOrder,
    LoopGru,
    Tf32Matmuls,
    WrongAtRandom,
    WrongWhenBatchFirstAndPacked,
    WrongWhenBfloat16AndPacked,
    WrongWhenBidirectional,
)

from conformance import matrix, patterns
from conformance.case import Case
from conformance.compare import Check, compare, verdict_of
from conformance.contract import Backend
from conformance.data import GruOutput, Inputs, Weights, case_data
from conformance.engine import oracle_reference
from conformance.forms import Form, gru
from conformance.oracle import gru_reference
from conformance.precision import PrecisionMatch, diagnose_precision
from conformance.tolerance import derive
from conformance.variants import (
    BIAS,
    FORM,
    GATE_ORDER,
    LAYOUT,
    SEPARATION,
    STATE,
    VARIANTS,
    VariantMatch,
    applicable,
    describe,
    diagnose,
    distance,
)

# Every mistake in the registry shows here: two bidirectional layers, batch_first, h0, and an
# unsorted packed batch (lengths 7 and 1 among four items).
RICH = Case(
    3, 4, num_layers=2, bidirectional=True, batch_first=True, batch=4, seq_len=7, lengths="unsorted", initial_state=True
)
# planted_backends.ReverseIgnoresLengths only plants its bug in one-layer cases.
ONE_LAYER = replace(RICH, num_layers=1)
# batch-first-ignored needs a dense batch without h0 (a real backend would reject h0's shape).
DENSE = replace(RICH, lengths="dense", initial_state=False)


def run(backend: Backend, case: Case) -> tuple[Weights, Inputs, GruOutput, GruOutput, float, list[Check]]:
    weights, inputs = case_data(case)
    expected = gru_reference(case, weights, inputs)
    actual = backend.run(case, weights, inputs)
    tolerance = derive(case)
    return weights, inputs, expected, actual, tolerance.atol, compare(case, expected, actual, tolerance, inputs.lengths)


# --- the variants themselves -------------------------------------------------------------------


@pytest.mark.parametrize("case", matrix.cases("smoke", 0), ids=lambda c: c.id)
def test_the_generalised_gru_is_the_oracle_bit_for_bit(case: Case) -> None:
    weights, inputs = case_data(case)
    for linear_before_reset in (True, False):
        truth = gru_reference(case, weights, inputs, linear_before_reset=linear_before_reset)
        mine = gru(case, weights, inputs, Form(linear_before_reset=linear_before_reset))
        assert np.array_equal(truth.output, mine.output) and np.array_equal(truth.h_n, mine.h_n)


@pytest.mark.parametrize("variant_id", list(VARIANTS))
def test_every_variant_is_clearly_apart_from_the_oracle_where_it_applies(variant_id: str) -> None:
    """A variant that computes the oracle by mistake would never explain anything: each must differ."""
    variant = VARIANTS[variant_id]
    case = next(c for c in (RICH, DENSE) if variant.applies(c))
    weights, inputs = case_data(case)
    produced = variant.compute(case, weights, inputs)
    assert produced is not None
    apart = distance(case, inputs.lengths, produced, gru_reference(case, weights, inputs))
    assert apart > SEPARATION * derive(case).atol, f"{variant_id} is within {apart:.3g} of the oracle"
    assert variant.as_dict() == {"id": variant_id, "family": variant.family, "explanation": variant.explanation}
    assert variant.explanation and variant.family in (FORM, GATE_ORDER, BIAS, LAYOUT, STATE)


def test_variants_that_cannot_differ_on_a_case_do_not_apply() -> None:
    plain = Case(3, 4, bias=False)  # one layer, unidirectional, time-major, dense, no h0
    ids = {v.id for v in applicable(plain)}
    assert not [v for v in applicable(plain) if v.family in (BIAS, LAYOUT)]
    assert {v.id for v in applicable(plain) if v.family == STATE} == {"h-n-from-last-output"}
    assert {"reset-before-matmul", "update-gate-swapped", "gate-order-zrn"} <= ids
    assert {v.id for v in applicable(RICH)} | {v.id for v in applicable(DENSE)} == set(VARIANTS)


def test_a_variant_that_coincides_with_the_oracle_is_never_a_match() -> None:
    """h0-ignored's own output, judged with a tolerance so wide that the variant is only 2 tolerances
    from the truth: the result fails, the variant reproduces it exactly, and still it is no explanation."""
    weights, inputs = case_data(RICH)
    expected = gru_reference(RICH, weights, inputs)
    actual = VARIANTS["h0-ignored"].compute(RICH, weights, inputs)
    assert actual is not None
    apart = max(np.abs(actual.output - expected.output).max(), np.abs(actual.h_n - expected.h_n).max())
    ids = [m.id for m in diagnose(RICH, weights, inputs, actual, apart / 2, expected)]
    assert "h0-ignored" not in ids
    clearly = [m.id for m in diagnose(RICH, weights, inputs, actual, apart / (2 * SEPARATION), expected)]
    assert clearly[0] == "h0-ignored"


# --- planted mistakes are named ------------------------------------------------------------------

PLANTED = [(mistake(), want, RICH) for mistake, want in MISTAKES.items()] + [
    (SwappedRZ(), "gate-order-zrn", RICH),
    (DroppedBhn(), "b-hn-dropped", RICH),
    (SwappedHnDirections(), "h-n-directions-swapped", RICH),
    (ReverseIgnoresLengths(), "reverse-starts-at-padded-end", ONE_LAYER),
]


@pytest.mark.parametrize(("backend", "want", "case"), PLANTED, ids=[p[0].family for p in PLANTED])
def test_each_planted_mistake_is_named_first_by_its_variant(backend: Backend, want: str, case: Case) -> None:
    weights, inputs, expected, actual, tolerance, checks = run(backend, case)
    assert verdict_of(checks) == "fail"
    matches = diagnose(case, weights, inputs, actual, tolerance, expected)
    assert [m.id for m in matches][:1] == [want], describe(matches)
    assert matches[0].headroom <= 1 < matches[0].separation / SEPARATION
    assert describe(matches).startswith(f"consistent with {want} (")
    assert diagnose_precision(case, weights, inputs, actual, tolerance, expected) is None


MISTAKES_BY_NAME = {want: mistake() for mistake, want in MISTAKES.items()}


def test_a_layout_variant_of_another_shape_is_matched_after_the_shape_check_fails() -> None:
    weights, inputs, expected, actual, tolerance, checks = run(MISTAKES_BY_NAME["batch-first-output-time-major"], RICH)
    assert [c.name for c in checks if not c.passed] == ["output.shape"]
    assert diagnose(RICH, weights, inputs, actual, tolerance, expected)[0].id == "batch-first-output-time-major"


def test_ties_are_broken_by_the_padding() -> None:
    """With one layer, lengths ignored and state stepped through padding agree on every valid
    position; only the padding (zeros or not) tells which mistake a backend made."""
    for want, other in (("lengths-ignored", "padding-advances-state"), ("padding-advances-state", "lengths-ignored")):
        weights, inputs, expected, actual, tolerance, _ = run(MISTAKES_BY_NAME[want], ONE_LAYER)
        matches = diagnose(ONE_LAYER, weights, inputs, actual, tolerance, expected)
        assert [m.id for m in matches] == [want, other]
        assert matches[0].padding_agrees and not matches[1].padding_agrees


CORRECT = [LoopGru(), NumpyGru(), FusedGateMatmul(), Float64ThenRounded()]


@pytest.mark.parametrize("case", [RICH, replace(RICH, dtype="float64")], ids=lambda c: c.dtype)
@pytest.mark.parametrize("backend", CORRECT, ids=lambda b: b.family)
def test_a_correct_backend_gets_no_diagnosis(backend: Backend, case: Case) -> None:
    weights, inputs, expected, actual, tolerance, checks = run(backend, case)
    assert verdict_of(checks) == "pass"
    assert diagnose(case, weights, inputs, actual, tolerance, expected) == []
    assert diagnose_precision(case, weights, inputs, actual, tolerance, expected) is None
    assert describe([]) == "no known variant reproduces this result"


# --- precision -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "case", "want"),
    [
        (Float32Everywhere(), replace(RICH, dtype="float64"), "float32"),
        (Float32Everywhere(), replace(DENSE, dtype="float64"), "float32"),
        (Bfloat16Inside(), RICH, "bfloat16"),
        (Bfloat16Inside(), DENSE, "bfloat16"),
        (Tf32Matmuls(), RICH, "tf32-matmul"),
    ],
    ids=["f64-in-f32", "f64-in-f32-dense", "f32-in-bf16", "f32-in-bf16-dense", "f32-with-tf32-matmuls"],
)
def test_a_backend_computing_in_a_coarser_format_is_named_by_it(backend: Backend, case: Case, want: str) -> None:
    weights, inputs, expected, actual, tolerance, checks = run(backend, case)
    assert verdict_of(checks) == "fail"
    match = diagnose_precision(case, weights, inputs, actual, tolerance, expected)
    assert match is not None and match.format == want, match
    assert match.observed_error > tolerance and 0.25 <= match.observed_error / match.emulated_error <= 4
    assert match.describe().startswith(f"consistent with computing in {want}: ")
    assert diagnose(case, weights, inputs, actual, tolerance, expected) == []


def test_a_semantic_mistake_is_not_a_precision_problem() -> None:
    for backend in (KerasGateOrder(), CandidateFirstGateOrder()):
        weights, inputs, expected, actual, tolerance, _ = run(backend, RICH)
        assert diagnose_precision(RICH, weights, inputs, actual, tolerance, expected) is None


# --- failure patterns across the matrix ----------------------------------------------------------

PAIRWISE = matrix.cases("pairwise", 0)


def outcomes(backend: Backend) -> list[tuple[Case, bool]]:
    """(case, failed) over the pairwise tier, judged by the suite's own comparison."""
    result = []
    for case in PAIRWISE:
        weights, inputs, expected = oracle_reference(case)
        checks = compare(case, expected, backend.run(case, weights, inputs), derive(case), inputs.lengths)
        result.append((case, verdict_of(checks) == "fail"))
    return result


def test_a_mistake_on_one_field_value_is_found() -> None:
    pattern = patterns.find_pattern(outcomes(WrongWhenBidirectional()))
    bidirectional = sum(c.bidirectional for c in PAIRWISE)
    assert (pattern.kind, pattern.conditions, pattern.fails_when) == (patterns.EXACT, ("bidirectional = True",), True)
    assert (pattern.matched, pattern.failing_matched, pattern.failing_others) == (bidirectional, bidirectional, 0)
    assert pattern.describe() == (
        f"fails exactly when bidirectional = True ({bidirectional} of {bidirectional} such cases fail, "
        f"0 of {len(PAIRWISE) - bidirectional} others)"
    )


def test_a_mistake_on_two_values_together_is_found() -> None:
    pattern = patterns.find_pattern(outcomes(WrongWhenBfloat16AndPacked()))
    assert (pattern.kind, pattern.conditions) == (patterns.EXACT, ("packed", "dtype = bfloat16"))
    assert pattern.failing_matched == sum(c.dtype == "bfloat16" and c.packed for c in PAIRWISE) > 1


def test_a_pair_the_covering_array_cannot_isolate_is_found_and_its_aliases_named() -> None:
    """On the pairwise tier, the batch_first cases that are packed are exactly the batch_first cases
    with hidden_size >= 6: both conditions select the same cases, so the pattern names the likelier
    one and says the other fits too."""
    failing = {c.id for c in PAIRWISE if c.batch_first and c.packed}
    assert failing == {c.id for c in PAIRWISE if c.batch_first and c.hidden_size >= 6}, "the tier's aliasing moved"
    pattern = patterns.find_pattern(outcomes(WrongWhenBatchFirstAndPacked()))
    assert (pattern.kind, pattern.conditions) == (patterns.EXACT, ("batch_first = True", "packed"))
    assert "hidden_size >= 6 and batch_first = True" in pattern.alternatives
    assert "; equally consistent on these cases: " in pattern.describe()


def test_a_scattered_failure_set_has_no_clean_pattern() -> None:
    results = outcomes(WrongAtRandom())
    assert 3 <= sum(failed for _, failed in results) <= len(results) - 3
    pattern = patterns.find_pattern(results)
    assert pattern.kind in (patterns.NONE, patterns.PARTIAL)
    assert pattern.describe().startswith("no clean pattern in ")
    if pattern.kind == patterns.PARTIAL:
        assert (
            "; partial pattern: " in pattern.describe()
            and pattern.failing_others + (pattern.matched - pattern.failing_matched) > 0
        )


def test_no_failures_and_every_failure_are_said_plainly() -> None:
    assert patterns.find_pattern(outcomes(LoopGru())).describe() == f"no failures ({len(PAIRWISE)} cases)"
    everything = patterns.find_pattern(outcomes(CandidateFirstGateOrder()))
    assert everything.describe() == f"fails on every case ({len(PAIRWISE)} of {len(PAIRWISE)})"


def test_a_single_passing_case_reads_as_fails_except_when() -> None:
    lone = PAIRWISE[3]
    pattern = patterns.find_pattern([(c, c != lone) for c in PAIRWISE])
    assert pattern.kind == patterns.EXACT and not pattern.fails_when
    assert [c for c in PAIRWISE if all(_holds(t, c) for t in pattern.conditions)] == [lone]
    assert pattern.describe().startswith("fails except when ")


def _holds(text: str, case: Case) -> bool:
    """Re-evaluate a rendered condition, independently of patterns.py's atoms."""
    named = {
        "packed": case.packed,
        "ragged": case.lengths in ("sorted", "unsorted"),
        "16-bit dtype": case.dtype in ("float16", "bfloat16"),
    }
    if text in named:
        return named[text]
    name, op, value = text.split(" ", 2)
    actual = getattr(case, name)
    wanted = type(actual)(value == "True") if isinstance(actual, bool) else type(actual)(value)
    return {"=": actual == wanted, "!=": actual != wanted, ">=": actual >= wanted, "<=": actual <= wanted}[op]


def test_patterns_are_deterministic_and_their_conditions_select_exactly_the_failures() -> None:
    results = outcomes(WrongWhenBatchFirstAndPacked())
    shuffled = list(results)
    random.Random(7).shuffle(shuffled)
    pattern = patterns.find_pattern(results)
    assert patterns.find_pattern(shuffled) == pattern
    for condition in (pattern.condition, *pattern.alternatives):
        selected = {c for c, _ in results if all(_holds(t, c) for t in condition.split(" and "))}
        assert selected == {c for c, failed in results if failed}, condition


# --- plain, serialisable results -----------------------------------------------------------------


def test_diagnoses_round_trip_through_json() -> None:
    weights, inputs, expected, actual, tolerance, _ = run(KerasGateOrder(), RICH)
    match = diagnose(RICH, weights, inputs, actual, tolerance, expected)[0]
    assert VariantMatch.from_dict(json.loads(json.dumps(match.as_dict()))) == match
    precision = PrecisionMatch("bfloat16", 0.01, 0.02, ("float16",))
    assert PrecisionMatch.from_dict(json.loads(json.dumps(precision.as_dict()))) == precision
    pattern = patterns.find_pattern(outcomes(WrongWhenBatchFirstAndPacked()))
    data = json.loads(json.dumps(pattern.as_dict()))
    assert data["description"] == pattern.describe()
    assert patterns.Pattern.from_dict(data) == pattern
