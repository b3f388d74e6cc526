"""The plan (`--plan`): counts of cases, results and builds, what is cached, and estimates from recorded timings.

Fake backends make the arithmetic exact; the real ONNX and JAX adapters give the full tier's
build counts (planning builds nothing, so it is fast); one e2e test goes through the plugin.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conformance import estimate, matrix
from conformance.case import Case
from conformance.contract import BaseBackend, Build, Planning
from conformance.estimate import Rate, fit, units
from conformance.records import RESULT


def test_fit_recovers_a_line_and_keeps_coefficients_non_negative() -> None:
    line = fit([(u, 2.0 + 0.5 * u) for u in (1, 5, 260)], "test")
    assert line is not None and line.fixed == pytest.approx(2.0) and line.per_unit == pytest.approx(0.5)
    flat = fit([(5, 1.0), (5, 3.0)], "test")
    assert flat is not None and (flat.fixed, flat.per_unit) == (2.0, 0.0)  # units never vary: the mean
    falling = fit([(1, 3.0), (10, 2.0), (100, 1.0)], "test")
    assert falling is not None and falling.per_unit == 0.0 and falling.fixed == pytest.approx(2.0)
    assert fit([], "test") is None


@dataclass
class Builder(BaseBackend):
    """A backend that builds one thing per structure; `cached` structures are in its cache."""

    builder: str = "compile (fake)"
    cached: set[tuple[object, ...]] = field(default_factory=set)
    history: list[tuple[str, float, float]] = field(default_factory=list)  # (key, units, seconds)
    refuse_layers: int = 0

    def supports(self, case: Case) -> str | None:
        return "too deep" if case.num_layers == self.refuse_layers else None

    def plan(self, cases: list[Case]) -> list[Build]:
        return [Build(self.builder, repr(c.structure), c.structure in self.cached, units(c)) for c in cases]

    def recorded(self) -> list[Build]:
        return [Build(self.builder, key, True, u, s) for key, u, s in self.history]


CASES = [Case(2, 3, num_layers=layers, seq_len=seq) for layers in (1, 2) for seq in (1, 5)]


def test_builds_are_counted_once_across_columns_and_estimated_from_the_cache(tmp_path: Path) -> None:
    history = [("old-a", 1.0, 3.0), ("old-b", 2.0, 5.0), ("old-c", 4.0, 9.0)]  # 1 + 2 x units
    cached = {CASES[0].structure}
    ort = Builder("onnx-fake", cached=cached, history=history)
    ref = Builder("onnx-fake", device="cpu2", cached=cached, history=history)  # a second column, same builder
    assert isinstance(ort, Planning)
    made = estimate.make("t", CASES, [ort, ref], root=tmp_path, reference={})
    assert (made.cases, made.results) == (4, 8)
    (line,) = made.builds
    # CASES[0] and CASES[1] differ only in seq_len: one structure, cached; the two 2-layer cases another, not.
    assert (line.builder, line.total, line.cached) == ("compile (fake)", 2, 1)
    # The one build to do: 2 layers, the last case seen of that structure (seq_len 5): units 10, 1 + 2 x 10 s.
    assert line.estimate_s == pytest.approx(21.0)
    assert line.rate is not None and line.rate.basis == "this cache" and line.rate.samples == 3


def test_unsupported_cases_build_nothing_and_cost_nothing(tmp_path: Path) -> None:
    backend = Builder("fake", refuse_layers=2)
    reference = {"run fake[cpu]": Rate(1.0, 0.0, 10, "reference"), "compile (fake)": Rate(7.0, 0.0, 1, "reference")}
    made = estimate.make("t", CASES, [backend], root=tmp_path, reference=reference)
    (build,) = made.builds
    assert (build.total, build.cached, build.estimate_s) == (1, 0, 7.0)
    run = next(r for r in made.runs if r.name == "fake[cpu]")
    assert (run.results, run.ran, run.estimate_s) == (4, 2, 2.0)


def test_without_any_timing_the_estimate_says_unknown(tmp_path: Path) -> None:
    made = estimate.make("t", CASES, [Builder("fake")], root=tmp_path, reference={})
    assert set(made.unknown) == {"compile (fake)", "oracle", "per check", "fake[cpu]"}
    assert made.total_s == 0.0
    assert any("no timing recorded for" in line for line in made.lines())


def test_recorded_run_timings_feed_the_next_plan(tmp_path: Path) -> None:
    case = CASES[3]
    records = [
        {"kind": RESULT, "backend": "a[cpu]", "verdict": "pass", "case": case.as_dict(), "timing": t}
        for t in ({"backend_s": 0.5, "reference_s": 2.0}, {"backend_s": 0.7, "reference_s": 0.001})
    ]
    records.append({"kind": RESULT, "backend": "a[cpu]", "verdict": "unsupported", "case": case.as_dict()})
    estimate.record_results(records, root=tmp_path)
    runs = estimate.recorded_runs(tmp_path)
    assert runs["run a[cpu]"] == [(units(case), 0.5), (units(case), 0.7)]
    assert runs["oracle"] == [(units(case), 2.0)]  # once per case: the process caches the oracle
    estimate.record_results(records, root=tmp_path)  # a second run appends
    assert len(estimate.recorded_runs(tmp_path)["run a[cpu]"]) == 4
    assert json.loads(estimate.timings_path(tmp_path).read_text())  # plain JSON


@dataclass
class Differentiating(Builder):
    """A `Builder` with a backward check."""

    def run_backward(self, case, weights, inputs, cotangents):  # type: ignore[no-untyped-def]
        raise AssertionError("planning never runs a backend")


def test_each_kind_of_check_is_counted_and_estimated_at_its_own_rate(tmp_path: Path) -> None:
    """Forward, backward and invariant checks cost differently: each has its own rate and count. A backend that
    doesn't differentiate plans no backward run (its counterpart)."""
    reference = {
        "run fake[cpu]": Rate(1.0, 0.0, 3, "reference"),
        "run fake[cpu] (backward)": Rate(10.0, 0.0, 3, "reference"),
        "run fake[cpu] (invariants)": Rate(100.0, 0.0, 3, "reference"),
    }
    one_layer = [c.num_layers == 1 for c in CASES]

    def applies(case: Case) -> bool:
        return case.num_layers == 1

    both = ("forward", "backward")
    made = estimate.make(
        "t", CASES, [Differentiating("fake")], tmp_path, reference, quantities=both, invariants=[applies]
    )
    lines = {r.name: (r.results, r.ran, r.estimate_s) for r in made.runs}
    assert lines["fake[cpu]"] == (4, 4, 4.0)
    assert lines["fake[cpu] (backward)"] == (4, 4, 40.0)
    assert lines["fake[cpu] (invariants)"] == (sum(one_layer), sum(one_layer), 100.0 * sum(one_layer))
    assert made.results == 4 + 4 + sum(one_layer)
    plain = estimate.make("t", CASES, [Builder("fake")], tmp_path, reference, quantities=both)
    assert {r.name: r.ran for r in plain.runs}["fake[cpu] (backward)"] == 0


def test_recorded_timings_are_kept_apart_by_kind(tmp_path: Path) -> None:
    case = CASES[3]
    base = {"kind": RESULT, "backend": "a[cpu]", "verdict": "pass", "case": case.as_dict()}
    records = [
        {**base, "timing": {"backend_s": 0.5}},
        {**base, "quantity": "backward", "timing": {"backend_s": 2.0}},
        {**base, "check": "invariant:determinism", "timing": {"backend_s": 3.0}},
    ]
    estimate.record_results(records, root=tmp_path)
    runs = estimate.recorded_runs(tmp_path)
    assert runs["run a[cpu]"] == [(units(case), 0.5)]
    assert runs["run a[cpu] (backward)"] == [(units(case), 2.0)]
    assert runs["run a[cpu] (invariants)"] == [(units(case), 3.0)]


def test_reference_timings_are_read_from_the_declared_file() -> None:
    rates = estimate.reference_rates()
    assert "oracle" in rates and "run torch[cpu]" in rates and "export (dynamo)" in rates
    assert all(r.fixed >= 0 and r.per_unit >= 0 and r.samples > 0 for r in rates.values())


# -- the full tier: builds scale with structures ---------------------------------------------


def test_full_tier_exports_scale_with_structures_not_cases(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from backends.onnx.export_store import ModelStore, Signature
    from backends.onnx.source_torchscript import TorchScriptSource

    full = matrix.cases("full")
    source = TorchScriptSource(store=ModelStore(tmp_path))
    exports = source.plan(full)
    structures = {(c.structure, c.enforce_sorted) for c in full}  # structures x sorting variants
    trace_shapes = {c.export_dims for c in full}
    assert len(exports) <= len(structures) * len(trace_shapes)
    assert len({b.key for b in exports}) == len(exports) and not any(b.cached for b in exports)
    # Every case that is traced elsewhere than its run shape shares its structure's one export there.
    shared = [c for c in full if c.export_shape != "same"]
    keys = {Signature.of("torchscript", c).key() for c in shared}
    assert len(keys) == len({(c.structure, c.enforce_sorted, c.export_shape) for c in shared})
    assert len(exports) < len(full) / 2
    # The counterpart: tracing `other` next to the run shape (B+2, T+3), as before, needs more exports.
    before = {(c.structure, c.enforce_sorted, (c.batch + 2, c.seq_len + 3)) for c in full if c.export_shape == "other"}
    assert len(before) > len({Signature.of("torchscript", c).key() for c in full if c.export_shape == "other"})


def test_full_tier_jax_compiles_once_per_structure_and_run_shape(tmp_path: Path) -> None:
    pytest.importorskip("jax")
    from backends.flax_linen import FlaxLinenGru

    full = matrix.cases("full")
    linen = FlaxLinenGru(programs_root=tmp_path)
    compiles = linen.plan(full)
    assert len(compiles) == len({(c.structure, c.batch, c.seq_len) for c in full})
    assert not any(b.cached for b in compiles)


@pytest.mark.e2e
def test_plan_option_prints_the_plan_and_runs_nothing(suite, tmp_path: Path) -> None:
    run = suite("--plan", "--tier", "full", "--shard", "3/8", "--backends", "torch[cpu]", "--results", "x.jsonl")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    from conformance import invariants

    ids = _shard_ids("full", 3, 8)
    declared = invariants.named(matrix.invariants("full"))
    invariant_checks = sum(1 for i in declared for c in map(Case.from_id, ids) if i.applies(c))
    assert invariant_checks > 0  # the full tier declares invariants: each is a result of its own
    assert f"cases {len(ids)}; results {len(ids) + invariant_checks}" in run.stdout  # --quantity forward
    assert "torch[cpu] (invariants)" in run.stdout and "torch[cpu] (backward)" not in run.stdout
    assert "GRU conformance estimate: tier full, shard 3/8" in run.stdout and "estimated:" in run.stdout
    assert "torch[cpu]" in run.stdout and "collected" not in run.stdout
    assert not (Path(__file__).resolve().parent.parent / "x.jsonl").exists()  # no results file: nothing ran


def _shard_ids(tier: str, index: int, count: int) -> set[str]:
    from conformance import sharding

    cases = matrix.cases(tier)
    cases += [c for c in matrix.zero_length() if c not in cases]  # the declared cases every tier adds
    return {c.id for c in sharding.select(cases, sharding.Shard(index, count))}


def test_a_jax_backends_vjp_programs_are_builds_only_when_the_run_checks_gradients(tmp_path: Path) -> None:
    pytest.importorskip("jax")
    from backends.flax_linen import FlaxLinenGru

    linen = FlaxLinenGru(programs_root=tmp_path)
    forward, backward = "compile (flax-linen[cpu])", "compile backward (flax-linen[cpu])"
    expected = {("forward",): {forward}, ("backward",): {backward}, ("forward", "backward"): {forward, backward}}
    for quantities, builders in expected.items():
        made = estimate.make("t", CASES, [linen], root=tmp_path, reference={}, quantities=quantities)
        assert {b.builder for b in made.builds} == builders, quantities
        assert all(b.total == len({(c.structure, c.batch, c.seq_len) for c in CASES}) for b in made.builds)
    # A backend that does not differentiate builds nothing for a backward-only run (its check is refused).
    assert not estimate.make(
        "t", CASES, [Builder("fake")], root=tmp_path, reference={}, quantities=("backward",)
    ).builds


def test_the_per_check_overhead_counts_seconds_only(tmp_path: Path) -> None:
    """An invariant result's timing holds `runs`, a count: added to the timed seconds it made the loop look fully
    timed, and the per-check overhead came out 0."""
    case = CASES[0]
    base = {"kind": RESULT, "backend": "a[cpu]", "verdict": "pass", "case": case.as_dict()}
    records = [{**base, "check": "invariant:determinism", "timing": {"backend_s": 1.0, "runs": 50.0}}]
    estimate.record_results(records, root=tmp_path, loop_s=3.0)
    assert estimate.recorded_runs(tmp_path)["per check"] == [(1.0, 2.0)]  # 3 s of loop, 1 s of it timed
