"""Invariant checks: each planted breaker agrees with the oracle, breaks exactly its invariant, and is caught.

The breakers (tests/planted_backends.py) are wrong only where the matrix's fixed data can't look:
a batch of one inside a batch of three, an h0 of exact zeros, padding after the longest item, an
unsorted batch whose longest item isn't last, a second identical call.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from example_gru_backend.adapter import NumpyGru
from planted_backends import INVARIANT_BREAKERS, CallCounterInOutput

from conformance import divergences, engine, matrix
from conformance.case import Case
from conformance.invariants import INVARIANTS, InvariantError, check, named
from conformance.records import Result, check_of, read_records
from conformance.verdict import Verdict
from reports.verdict_diff import verdicts

# An unsorted packed bidirectional batch of three without h0: every invariant applies to it.
UNSORTED = Case(3, 4, bidirectional=True, batch=3, seq_len=6, lengths="unsorted")
DENSE = Case(3, 4, num_layers=2, batch_first=True, batch=3, seq_len=5)


def test_every_invariant_applies_to_the_test_case() -> None:
    assert all(invariant.applies(UNSORTED) for invariant in INVARIANTS.values())
    assert list(INVARIANTS) == list(INVARIANT_BREAKERS)


@pytest.mark.parametrize("case", [UNSORTED, DENSE], ids=["unsorted", "dense"])
def test_a_correct_gru_keeps_every_invariant(case: Case) -> None:
    for invariant in INVARIANTS.values():
        if invariant.applies(case):
            result = check(NumpyGru(), case, invariant)
            assert result.verdict == Verdict.PASS, (invariant.name, result.reason)
            assert result.check == f"invariant:{invariant.name}"


@pytest.mark.parametrize("broken", list(INVARIANT_BREAKERS))
def test_each_breaker_passes_the_oracle_and_breaks_only_its_invariant(broken: str) -> None:
    backend = INVARIANT_BREAKERS[broken]()
    assert engine.check(backend, UNSORTED).verdict == Verdict.PASS  # invisible to the oracle ...
    verdicts_ = {name: check(backend, UNSORTED, invariant).verdict for name, invariant in INVARIANTS.items()}
    assert verdicts_ == {name: Verdict.FAIL if name == broken else Verdict.PASS for name in INVARIANTS}  # ... caught


def test_a_broken_invariant_explains_itself() -> None:
    result = check(INVARIANT_BREAKERS["batch-independence"](), UNSORTED, INVARIANTS["batch-independence"])
    first = result.reason.splitlines()[0]
    assert first.startswith("invariant batch-independence broken: each item run alone gives its row")
    assert "item 0 alone, item 1 alone, item 2 alone" in first
    assert "worst element at [step=" in result.reason and "tolerance" in result.reason
    assert result.rerun.endswith(f"--case {UNSORTED.id} --invariant batch-independence -k test_invariant")
    assert result.tolerance is not None and result.tolerance["basis"].startswith("2 x atol")
    single = engine.check(NumpyGru(), UNSORTED).tolerance
    assert single is not None and result.tolerance["atol"] == pytest.approx(2 * single["atol"])


def test_omitted_h0_is_compared_with_explicit_zeros() -> None:
    result = check(INVARIANT_BREAKERS["omitted-h0"](), DENSE, INVARIANTS["omitted-h0"])
    assert result.verdict == Verdict.FAIL
    assert "h0 given as zeros" in result.reason
    assert not INVARIANTS["omitted-h0"].applies(Case(3, 4, initial_state=True))  # nothing to omit


def test_determinism_is_informative_unless_claimed() -> None:
    claimed = check(CallCounterInOutput(deterministic=True), DENSE, INVARIANTS["determinism"])
    assert claimed.verdict == Verdict.FAIL
    informative = check(CallCounterInOutput(deterministic=False), DENSE, INVARIANTS["determinism"])
    assert informative.verdict == Verdict.CONVENTION  # xfail: reported, not a failure
    assert "not a failure" in informative.reason and "ULP" in informative.reason
    assert informative.tolerance is not None and informative.tolerance["atol"] == 0.0


def test_the_tiers_declare_their_invariants_and_bad_names_are_refused(tmp_path: Path) -> None:
    for tier in matrix.TIERS:
        assert set(matrix.invariants(tier)) <= set(INVARIANTS)
    assert matrix.invariants("pairwise")  # the default tier runs some
    text = matrix.DEFAULT_MATRIX.read_text().replace('pairwise = ["', 'pairwise = ["batch-dependence", "', 1)
    path = tmp_path / "matrix.toml"
    path.write_text(text)
    with pytest.raises(matrix.MatrixError, match="invariant names; valid: batch-independence"):
        matrix.cases("smoke", path=path)
    with pytest.raises(InvariantError, match="unknown invariant"):
        named(["bogus"])


def test_registry_entries_explain_only_their_own_check(tmp_path: Path) -> None:
    path = tmp_path / "divergences.toml"
    path.write_text(
        '[[divergence]]\nid = "batch-of-one"\nbackends = ["planted-batch-of-one[*]"]\n'
        'check = "invariant:batch-independence"\nmax_headroom = 1e15\nreason = "a fast path for a batch of one"\n'
    )
    registry = divergences.load(path)
    backend = INVARIANT_BREAKERS["batch-independence"]()
    relabelled = check(backend, UNSORTED, INVARIANTS["batch-independence"], registry)
    assert relabelled.verdict == Verdict.KNOWN_DIVERGENCE and relabelled.divergence == "batch-of-one"
    untouched = check(backend, UNSORTED, INVARIANTS["determinism"], registry)
    assert untouched.verdict == Verdict.PASS  # not unexpected_pass: the entry is about another check
    assert engine.check(backend, UNSORTED, registry=registry).verdict == Verdict.PASS
    path.write_text(path.read_text() + "unless = { bidirectional = [true], seq_len = [6] }\n")
    spared = check(backend, UNSORTED, INVARIANTS["batch-independence"], divergences.load(path))
    assert spared.verdict == Verdict.FAIL  # `unless` matches this case: the entry doesn't apply


def test_records_keep_the_check_apart(tmp_path: Path) -> None:
    result = check(NumpyGru(), DENSE, INVARIANTS["determinism"])
    record = result.as_record()
    assert record["check"] == "invariant:determinism" and Result.from_record(record).check == record["check"]
    old = {k: v for k, v in engine.check(NumpyGru(), DENSE).as_record().items() if k != "check"}
    assert check_of(old) == "oracle" and Result.from_record(old).check == "oracle"  # files from before the field
    import json

    path = tmp_path / "results.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (old, record)) + "\n")
    assert verdicts([path]) == {
        ("numpy-example[cpu]", DENSE.id, "forward"): "pass",
        ("numpy-example[cpu]", f"{DENSE.id} invariant:determinism", "forward"): "pass",
    }


@pytest.mark.e2e
def test_the_suite_runs_a_named_invariant_and_its_rerun_reruns_exactly_it(suite, tmp_path: Path) -> None:
    planted = ("--backend-module", "planted_backends:batch_of_one", "--backends", "planted-batch-of-one")
    run = suite(*planted, "--tier", "smoke", "--invariant", "batch-independence")
    assert run.returncode == 1, run.stdout + run.stderr
    smoke = len(matrix.cases("smoke")) + len(matrix.zero_length())
    applies = [c for c in matrix.cases("smoke") if INVARIANTS["batch-independence"].applies(c)]
    assert f"{len(applies)} failed, {smoke} passed" in run.stdout  # the oracle passes everywhere; the invariant never
    assert "invariant batch-independence broken: each item run alone gives its row" in run.stdout
    assert "invariants: 0 hold; broken: batch-independence" in run.stdout  # the terminal summary
    records = [r for r in read_records(tmp_path / "results.jsonl") if r["kind"] == "result"]
    assert {check_of(r) for r in records} == {"oracle", "invariant:batch-independence"}
    rerun = next(r["rerun"] for r in records if r["check"] != "oracle")
    again = suite(*shlex.split(rerun)[2:], "--backend-module", "planted_backends:batch_of_one")
    assert (
        again.returncode == 1 and "1 failed, 3 deselected" in again.stdout
    )  # the invariant alone: no oracle check, forward or backward
    exact = suite(*planted, "--case", applies[0].id)
    assert exact.returncode == 0 and "1 passed, 2 skipped" in exact.stdout  # --case alone: the oracle check only
