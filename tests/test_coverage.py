"""Each backend's own coverage: its space of value pairs, the cases added to cover it, probes, no silent zero.

The pairwise tier promises every value pair; a backend only checks the cases it supports. These tests
hold the promise per backend (built-in ones, and planted narrow ones) and check that the checks can fail:
the shared tier alone leaves those spaces uncovered.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from planted_backends import (
    FLOAT64,
    PACKED,
    DeclaresRefusals,
    NarrowGru,
    StaleDeclaration,
    narrow_refusal,
)

from conformance import matrix, selection, sharding
from conformance import plan as planning
from conformance.accounting import RunShape, account
from conformance.case import Case
from conformance.contract import Backend, StaticCapabilities
from conformance.coverage import Space
from conformance.data import GruOutput, Inputs, Weights
from conformance.engine import check
from conformance.pairs import case_pairs, coverage
from conformance.records import read_records
from conformance.verdict import Verdict

SEED = 0


@cache
def space() -> Space:
    return planning.space(matrix.load(), SEED)


@cache
def pairwise() -> tuple[Case, ...]:
    return tuple(matrix.cases("pairwise", SEED))


@cache
def builtin() -> tuple[Backend, ...]:
    """Every backend the installed entry points give (the built-in families; cheap: `supports` needs no library)."""
    return tuple(selection.select(None, device="cpu"))


@cache
def full_plan() -> planning.Plan:
    """The pairwise plan of a planted narrow backend beside every built-in one."""
    return planning.build(list(pairwise()), [NarrowGru(), *builtin()], space())


def own_space(backend: Backend) -> set[str]:
    return set(space().keys(space().pairs(space().supported(backend.supports))))


def planned_coverage(plan: planning.Plan, backend: Backend) -> tuple[set[str], set[str]]:
    """(its space, the pairs its planned cases that `supports` admits cover), the latter counted case by case."""
    mine = [p.case for p in plan.items if p.backend.name == backend.name and backend.supports(p.case) is None]
    return own_space(backend), coverage(own_space(backend), space().dimensions, [c.as_dict() for c in mine]).covered


# -- the space itself -------------------------------------------------------------------------------------


def test_the_space_is_the_full_tier() -> None:
    """Its fast case construction (no `__post_init__`) gives exactly the cases the full tier builds."""
    assert space().cases == matrix.cases("full", SEED)


def test_the_pairs_of_a_space_are_those_of_its_cases_one_by_one() -> None:
    """The integer encoding against the plain per-case pairs, for a narrow space and for pairs and triples."""
    dims = {
        "input_size": [2, 5],
        "hidden_size": [1, 6, 16],
        "num_layers": [1, 2],
        "batch": [1, 3],
        "seq_len": [1, 5],
        "lengths": ["dense", "sorted"],
        "dtype": ["float32", "float64"],
    }
    narrow = NarrowGru()
    for strength in (2, 3):
        small = Space.of(dims, SEED, strength)
        supported = small.supported(narrow.supports)
        expected = set().union(
            *(case_pairs(c.as_dict(), small.dimensions, strength) for c in small.cases if narrow.supports(c) is None)
        )
        assert set(small.keys(small.pairs(supported))) == expected
        assert len(set(small.labels)) == small.n_pairs  # every id names one combination


def test_pairs_are_named_in_the_matrixs_dimension_order() -> None:
    keys = case_pairs(Case(2, 6, dtype="float64", bias=False).as_dict(), matrix.DIMENSIONS)
    assert "bias=false × dtype=float64" in keys
    assert len(keys) == len(list(itertools.combinations(matrix.DIMENSIONS, 2)))


def test_a_case_outside_the_matrix_has_no_row() -> None:
    assert space().row_of(Case(3, 4)) is None  # input_size 3 is not a matrix value
    assert space().row_of(pairwise()[0]) is not None
    assert space().row_of(Case(2, 1, bias=1)) is None  # type: ignore[arg-type]  # 1 is not the bool True


# -- each backend's own cover -----------------------------------------------------------------------------


def test_the_shared_part_of_the_tier_is_unchanged() -> None:
    plan = full_plan()
    assert plan.cases == list(pairwise())
    for backend in plan.backends:
        shared = [p.case for p in plan.items if p.backend.name == backend and not p.extra]
        assert shared == list(pairwise()), backend


def test_every_builtin_backend_covers_every_pair_of_its_own_space() -> None:
    backends = builtin()
    assert {b.family for b in backends} >= {"torch", "flax-nnx", "onnx-dynamo", "onnx-spec", "onnx-torchscript"}
    plan = full_plan()
    for backend in backends:
        wanted, covered = planned_coverage(plan, backend)
        assert wanted and covered == wanted, f"{backend.name}: {len(covered)}/{len(wanted)}"
        assert plan.backends[backend.name].planned_pairs == len(wanted)


def test_the_shared_tier_alone_leaves_the_narrower_spaces_uncovered() -> None:
    """The counterpart: without extras the check above fails, for the backends the issue measured."""
    shared_only = planning.build(list(pairwise()), list(builtin()))  # no space: no extras
    short = {}
    for backend in builtin():
        wanted, covered = planned_coverage(shared_only, backend)
        if covered != wanted:
            short[backend.name] = f"{len(covered)}/{len(wanted)}"
    assert {"flax-nnx[cpu]", "onnx-dynamo/ort[cpu]", "onnx-spec/ort[cpu]", "onnx-torchscript/ort[cpu]"} <= set(short)
    # The issue measured 321/379 with two trace shapes; a third (degenerate) widens every space.
    assert short["onnx-torchscript/ort[cpu]"] == "331/406"


def test_a_planted_narrow_backend_gets_its_whole_space_from_nothing() -> None:
    narrow = NarrowGru()
    assert sum(narrow.supports(c) is None for c in pairwise()) <= 1  # the shared tier gives it (almost) nothing
    wanted, shared = planned_coverage(planning.build(list(pairwise()), [narrow]), narrow)
    assert len(shared) < len(wanted) / 3  # 66 of its 239 pairs from the one shared case it runs
    plan = planning.build(list(pairwise()), [narrow], space())
    wanted, covered = planned_coverage(plan, narrow)
    assert covered == wanted and len(wanted) == 239
    extras = plan.extras(narrow.name)
    assert len(extras) <= 12 and all(narrow.supports(c) is None for c in extras)
    assert plan.backends[narrow.name].tests == len(pairwise()) + len(extras)


@dataclass
class NarrowPlusFloat64(NarrowGru):
    """The narrow GRU that also runs float64: a wider space around the narrow one."""

    def supports(self, case: Case) -> str | None:
        return narrow_refusal(replace(case, dtype="float32") if case.dtype == "float64" else case)


def test_a_column_reuses_its_familys_extras_first() -> None:
    """Same family (one library, or one exported model in two runtimes): the wider column takes the narrower's
    extras first, so the two compare on the same cases; another family shares only by chance."""
    shared = {}
    for family in ("planted-narrow", "planted-other"):
        narrow, wider = NarrowGru(), NarrowPlusFloat64(family=family, device="cuda")
        plan = planning.build(list(pairwise()), [narrow, wider], space())
        mine, theirs = set(plan.extras(narrow.name)), set(plan.extras(wider.name))
        shared[family] = len(mine & theirs)
        wanted, covered = planned_coverage(plan, wider)
        assert covered == wanted
    assert shared["planted-narrow"] >= len(mine) - 1 > shared["planted-other"]


def test_extras_are_deterministic_and_ignore_the_tiers_order() -> None:
    backends = [NarrowGru(), *builtin()]
    one = full_plan()
    shuffled = random.Random(3).sample(list(pairwise()), len(pairwise()))
    two = planning.build(shuffled, backends, space())
    assert {p.id for p in one.items} == {p.id for p in two.items}
    assert {(p.id, p.probe) for p in one.items} == {(p.id, p.probe) for p in two.items}


def test_cover_drops_picks_that_later_ones_made_redundant() -> None:
    everything = np.ones(len(space().cases), dtype=bool)
    nothing_yet = np.zeros(space().n_pairs, dtype=bool)
    picks = space().cover(everything, nothing_yet)
    need = space().pairs(everything)
    for i in range(len(picks)):
        rest = picks[:i] + picks[i + 1 :]
        assert (need & ~space().pairs(space().rows(rest))).any(), f"pick {i} is redundant"
    assert not (need & ~space().pairs(space().rows(picks))).any()


# -- sharding the plan ------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [2, 3, 5])
def test_shards_partition_the_plan_and_keep_a_cases_tests_together(count: int) -> None:
    plan = full_plan()
    shards = [plan.shard(sharding.Shard(i, count)) for i in range(1, count + 1)]
    ids = [p.id for shard in shards for p in shard.items]
    assert len(ids) == len(set(ids)) and set(ids) == {p.id for p in plan.items}
    homes: dict[str, set[int]] = {}
    for number, part in enumerate(shards):
        for planned in part.items:
            homes.setdefault(planned.case.id, set()).add(number)
    assert all(len(h) == 1 for h in homes.values())  # every test of a case runs on the case's one shard
    assert sorted(c.id for s in shards for c in s.cases) == sorted(c.id for c in pairwise())


# -- probes of declared refusals --------------------------------------------------------------------------


def test_one_probe_per_declared_refusal_preferably_refused_for_that_alone() -> None:
    declares = DeclaresRefusals()
    assert isinstance(declares, StaticCapabilities)
    plan = planning.build(list(pairwise()), [declares], space())
    probes = {p.probe.key: p.case for p in plan.items if p.probe is not None}
    assert set(probes) == {FLOAT64.key, PACKED.key}
    assert [r.key for r in declares.refusals(probes[FLOAT64.key])] == [FLOAT64.key]
    assert [r.key for r in declares.refusals(probes[PACKED.key])] == [PACKED.key]
    # Without a space (--case, smoke) the probes come from the given cases only, and nothing is added.
    given = [Case(2, 6, dtype="float64"), Case(2, 6, dtype="float64", batch=3, lengths="sorted"), Case(2, 6)]
    exact = planning.build(given, [declares])
    assert [p.case for p in exact.items] == given
    assert {p.probe.key: p.case for p in exact.items if p.probe is not None} == {
        FLOAT64.key: given[0],
        PACKED.key: given[1],
    }


def test_each_builtin_declaration_has_its_probe_on_pairwise() -> None:
    plan = full_plan()
    for backend in builtin():
        if not isinstance(backend, StaticCapabilities):
            continue
        keys = {r.key for c in space().cases for r in backend.refusals(c)}
        assert set(plan.backends[backend.name].probes) == keys, backend.name
    assert set(plan.backends["onnx-spec/ort[cpu]"].probes) == {
        "ort-cpu-gru-float64",
        "ort-cpu-gru-bfloat16",
        "ort-cpu-gru-layout-1",
    }
    assert set(plan.backends["onnx-dynamo/reference[cpu]"].probes) == {"dynamo-export-packed"}


def test_a_probe_that_the_library_refuses_confirms_the_declaration_quoting_it() -> None:
    case = Case(2, 6, dtype="float64")
    result = check(DeclaresRefusals(), case, probe=FLOAT64)
    assert result.verdict == Verdict.UNSUPPORTED and result.probe == FLOAT64.key
    assert result.reason.splitlines()[0] == FLOAT64.reason  # the library's words first
    assert result.reason.endswith("(this run's probe of the declared refusal planted-no-float64: confirmed)")
    assert check(DeclaresRefusals(), case).reason == FLOAT64.reason  # not a probe: the declaration, unrun


def test_a_probe_that_runs_and_agrees_is_unexpected_support_and_fails() -> None:
    result = check(StaleDeclaration(), Case(2, 6, dtype="float64"), probe=FLOAT64)
    assert result.verdict == Verdict.UNEXPECTED_SUPPORT and result.verdict.failing
    assert "remove or narrow the declaration" in result.reason


@dataclass
class StaleAndWrong(StaleDeclaration):
    """Declares float64 unsupported, runs it, and gets it wrong."""

    family: str = "planted-stale-and-wrong"

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        right = super().run(case, weights, inputs)
        return GruOutput(right.output + 1.0, right.h_n)


def test_a_probe_that_runs_and_disagrees_stays_a_failure() -> None:
    result = check(StaleAndWrong(), Case(2, 6, dtype="float64"), probe=FLOAT64)
    assert result.verdict == Verdict.FAIL and "declared unsupported (planted-no-float64)" in result.reason


# -- no silent zero ---------------------------------------------------------------------------------------


def _results(backend: str, verdicts: list[tuple[Case, Verdict, str]]) -> list[dict[str, Any]]:
    return [
        {"backend": backend, "case": c.as_dict(), "case_id": c.id, "verdict": v.value, "reason": why}
        for c, v, why in verdicts
    ]


PAIRWISE = RunShape("pairwise", True, None, 2, tuple(matrix.DIMENSIONS))
SMOKE = RunShape("smoke", False, None, 2, tuple(matrix.DIMENSIONS))


def test_a_backend_that_checked_nothing_fails_the_run_saying_what_and_why() -> None:
    results = _results("b[cpu]", [(Case(2, 6), Verdict.UNSUPPORTED, "lib: no")] * 3)
    empty = account("b[cpu]", results, PAIRWISE, space=[])
    assert empty.fails and "supports no case of the matrix" in empty.message and "lib: no" in empty.message
    refused = account("b[cpu]", results, PAIRWISE, space=["x"], admitted=3)
    assert refused.fails and "refused them when run: declare those refusals statically" in refused.message
    outside = account("b[cpu]", results, SMOKE, space=["x"], example="I2H1-…", admitted=0)
    assert outside.fails and "--tier pairwise" in outside.message and "--case I2H1-…" in outside.message


def test_checking_something_passes_and_a_shortfall_is_reported_not_failed() -> None:
    case = Case(2, 6)
    pairs = sorted(case_pairs(case.as_dict(), matrix.DIMENSIONS))
    ran = account("b[cpu]", _results("b[cpu]", [(case, Verdict.PASS, "")]), PAIRWISE, space=[*pairs, "dtype=x × y=z"])
    assert not ran.fails and ran.checked == 1
    assert ran.coverage is not None and ran.coverage.fraction() == f"{len(pairs)}/{len(pairs) + 1}"
    assert "missing 1, e.g. dtype=x × y=z" in ran.message
    whole = account("b[cpu]", _results("b[cpu]", [(case, Verdict.PASS, "")]), PAIRWISE, space=pairs)
    assert not whole.fails and whole.message == ""


@pytest.mark.parametrize(("named", "fails"), [(frozenset({"b[cpu]"}), True), (frozenset(), False)])
def test_an_unavailable_backend_fails_the_run_only_when_named(named: frozenset[str], fails: bool) -> None:
    results = _results("b[cpu]", [(Case(2, 6), Verdict.SKIPPED, "b is not importable")] * 2)
    found = account("b[cpu]", results, RunShape("pairwise", True, named=named), space=["x"])
    assert found.fails is fails and "not available here (b is not importable)" in found.message


def test_a_shard_without_a_case_it_supports_is_reported_not_failed() -> None:
    results = _results("b[cpu]", [(Case(2, 6), Verdict.UNSUPPORTED, "no")])
    found = account("b[cpu]", results, RunShape("pairwise", True, "2/4"), space=["x"], admitted=0)
    assert not found.fails and "this shard (2/4) holds none of the cases it supports" in found.message


# -- through the real plugin ------------------------------------------------------------------------------


def _rows(stdout: str, backend: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith(backend)]


@pytest.mark.e2e
def test_a_narrow_backend_is_checked_on_the_default_tier_and_its_bug_is_caught(suite: Any, tmp_path: Path) -> None:
    """The issue's story: a narrow plug-in got 0 of 19 cases and exited 0. Now it gets its own cover, which
    reaches the pair (batch_first, initial_state) where the planted bug lives."""
    run = suite("--backend-module", "planted_backends:narrow_h0", "--backends", "planted-narrow-h0")
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    assert "fails exactly when batch_first = True and initial_state = True" in run.stdout
    records = list(read_records(tmp_path / "results.jsonl"))
    (cov,) = [r for r in records if r["kind"] == "coverage"]
    assert cov["covered"] == len(cov["space"]) == 239 and cov["checked"] > 0
    correct = suite("--backend-module", "planted_backends:narrow", "--backends", "planted-narrow", "--no-report")
    assert correct.returncode == 0, correct.stdout[-3000:]
    (row,) = _rows(correct.stdout, "planted-narrow[cpu]")
    assert "239/239" in row


@pytest.mark.e2e
def test_a_backend_that_supports_nothing_fails_the_run_with_a_clear_message(suite: Any, tmp_path: Path) -> None:
    run = suite("--backend-module", "planted_backends:nothing", "--backends", "planted-nothing")
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    n = len(pairwise()) + len(matrix.zero_length(SEED))  # the tier and the zero-length cases every tier adds
    assert f"FAILS THE RUN: planted-nothing[cpu]: checked nothing: {n} cases, {n} unsupported" in run.stdout
    assert "it supports no case of the matrix" in run.stdout
    assert "the run fails: 1 backend(s) checked nothing (planted-nothing[cpu])" in run.stdout
    records = list(read_records(tmp_path / "results.jsonl"))
    assert records[-1]["kind"] == "end" and records[-1]["exitstatus"] == 1
    assert [r["fails"] for r in records if r["kind"] == "coverage"] == [True]


@pytest.mark.e2e
def test_a_stale_declaration_fails_the_run_as_unexpected_support(suite: Any) -> None:
    run = suite("--backend-module", "planted_backends:stale_declaration", "--backends", "planted-stale-declaration")
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    assert "1 failed" in run.stdout and "unexpected_support: declared unsupported (planted-no-float64)" in run.stdout
    honest = suite("--backend-module", "planted_backends:declares", "--backends", "planted-declares")
    assert honest.returncode == 0, honest.stdout[-3000:]


@pytest.mark.e2e
def test_shards_of_a_narrow_backend_collect_its_whole_plan_once(suite: Any) -> None:
    def collected(shard: str) -> list[str]:
        args = ("--collect-only", "-q", "--backend-module", "planted_backends:narrow", "--backends", "planted-narrow")
        run = suite(*args, "--shard", shard)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        return [line for line in run.stdout.splitlines() if "::test_gru[" in line]

    parts = [collected(f"{i}/3") for i in (1, 2, 3)]
    ids = [i for part in parts for i in part]
    tier = [*pairwise(), *matrix.zero_length(SEED)]  # every tier adds the zero-length cases
    plan = planning.build(tier, [NarrowGru()], space())
    assert len(ids) == len(set(ids)) == len(plan.items)


# -- what the terminal and the report show ----------------------------------------------------------------


def _write_run(path: Path, backend: str, checked: list[Case], refused: list[Case], space: list[str]) -> None:
    import json

    from conformance.records import Result

    shape = RunShape("pairwise", True, None, 2, tuple(matrix.DIMENSIONS))
    records = [Result(c, backend, "b", "cpu", Verdict.PASS).as_record() for c in checked]
    records += [Result(c, backend, "b", "cpu", Verdict.UNSUPPORTED, reason="lib: no").as_record() for c in refused]
    found = account(backend, records, shape, space=space, admitted=0)
    lines = [{**r, "run_id": path.stem, "worker": "main"} for r in [*records, found.as_record(shape)]]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")


def test_the_report_shows_each_columns_checked_cases_and_pairs_merged_over_shards(tmp_path: Path) -> None:
    from reports.render import render

    one, two = Case(2, 6), Case(5, 16, num_layers=2, bias=False)
    space = sorted(case_pairs(one.as_dict(), matrix.DIMENSIONS) | case_pairs(two.as_dict(), matrix.DIMENSIONS))
    _write_run(tmp_path / "shard1.jsonl", "b[cpu]", [one], [], space)
    _write_run(tmp_path / "shard2.jsonl", "b[cpu]", [two], [Case(2, 1)], space)
    done = render([tmp_path / "shard1.jsonl", tmp_path / "shard2.jsonl"], tmp_path / "report.html")
    page = done.report.read_text(encoding="utf-8")
    assert f"2 checked · {len(space)}/{len(space)} pairs" in page  # the union of both shards covers the space
    assert f"checked 2 of 3 cases; covers {len(space)}/{len(space)} value pairs of its space" in page
    alone = render([tmp_path / "shard1.jsonl"], tmp_path / "one.html").report.read_text(encoding="utf-8")
    covered = len(case_pairs(one.as_dict(), matrix.DIMENSIONS))
    assert f"1 checked · {covered}/{len(space)} pairs" in alone and 'class="b-partial"' in alone


def test_a_run_that_checked_nothing_is_marked_in_the_report(tmp_path: Path) -> None:
    from reports.render import render

    _write_run(tmp_path / "r.jsonl", "b[cpu]", [], [Case(2, 6)], [])
    page = render([tmp_path / "r.jsonl"], tmp_path / "r.html").report.read_text(encoding="utf-8")
    assert 'class="b-fail"' in page and "Fails the run: b[cpu]: checked nothing" in page


def test_the_terminal_table_has_tests_checked_and_pairs_per_backend() -> None:
    from conformance.backend_summary import summarize
    from conformance.plugin import summary_table
    from conformance.records import Result

    case = Case(2, 6)
    records = [Result(case, "b[cpu]", "b", "cpu", Verdict.PASS).as_record()]
    records.append(Result(Case(2, 1), "b[cpu]", "b", "cpu", Verdict.UNSUPPORTED, reason="no").as_record())
    pairs = sorted(case_pairs(case.as_dict(), matrix.DIMENSIONS))
    found = account("b[cpu]", records, PAIRWISE, space=[*pairs, "dtype=x × y=z"])
    header, row, *notes = summary_table(summarize(records), [found])
    assert header.split()[:5] == ["backend", "tests", "checked", "pairs", "pass"]
    assert row.split()[:5] == ["b[cpu]", "2", "1", f"{len(pairs)}/{len(pairs) + 1}", "1"]
    assert notes == [f"  {found.message}"] and "missing 1" in found.message


def test_a_supports_that_raises_admits_its_cases_and_each_check_records_the_error() -> None:
    """The plan asks `supports` over the whole space; one that raises must not crash planning (nor plan extras
    from a space it never stated): it admits, and the check of each case records the contract violation."""
    from hostile_backends import Raises

    backend = Raises(where="supports")
    tier = list(pairwise())
    plan = planning.build(tier, [backend], space())
    assert plan.backends[backend.name].in_space == len(tier) and plan.backends[backend.name].extra == 0
    result = check(backend, tier[0])
    assert result.verdict == Verdict.ERROR and "supports() must return None or a reason, not raise" in result.reason


@pytest.mark.e2e
def test_a_probe_is_attempted_by_the_forward_check_and_the_backward_check_reports_the_refusal(
    suite: Any, tmp_path: Path
) -> None:
    """A backward check can't confirm a declaration (a backend without gradients refuses every case for that
    reason alone), so the forward check attempts the probe and the backward check of the pair says `supports`."""
    planted = ("--backend-module", "planted_backends:stale_declaration", "--backends", "planted-stale-declaration")
    run = suite(*planted, quantity="both")
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    results = [r for r in read_records(tmp_path / "results.jsonl") if r["kind"] == "result"]
    probes = [r for r in results if r.get("probe")]
    assert probes and {r["quantity"] for r in probes} == {"forward"}
    assert {r["verdict"] for r in probes if r["probe"] == FLOAT64.key} == {"unexpected_support"}
    backward = {r["case_id"]: r for r in results if r["quantity"] == "backward"}
    for probe in probes:
        assert backward[probe["case_id"]]["verdict"] == "unsupported" and not backward[probe["case_id"]].get("probe")
