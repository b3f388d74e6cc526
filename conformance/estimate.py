"""What a run would cost before it runs (`pytest conformance --plan`): what it would check, build, and take.

For the selected tier, backends and shard: the cases, the results (cases x backends), the
builds the backends need first (ONNX exports, compiled JAX programs), how many of those are
cached already, and an estimated time. Why: a cold full tier is many machine-hours, and
CI shards are sized from this estimate (README, "Continuous integration").

Estimates come from timings the caches recorded: every cached export or program keeps what
building it took, and every run appends its per-result timings to
`<cache>/timings/results.json`. What this cache never measured is estimated from the
reference timings in `conformance/declared/timings.toml`, measured on a sample by
`benchmarks/plan_full.py --measure`. Cost grows with the steps a GRU takes, so each
estimate is a fitted `fixed + per_unit x units`, units = seq_len x layers x directions.
A backend's forward checks, backward checks and invariant checks cost differently (a backward
check differentiates; an invariant runs the backend on several derived inputs), so each kind
has its own rate (`run_name`) and the plan counts each kind's results.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from conformance.cache import cache_root
from conformance.case import Case
from conformance.contract import Backend, Build, Planning, PreparingBackward, checks_backward
from conformance.records import BACKWARD, FORWARD, RESULT
from conformance.verdict import Verdict

REFERENCE_TIMINGS: Traversable = resources.files("conformance") / "declared" / "timings.toml"
# Sizing CI shards (README, "Continuous integration"): a shard's wall time on a runner of
# RUNNER_CORES cores is its one-core work / (RUNNER_CORES x PARALLEL_EFFICIENCY) plus INSTALL_S.
# The efficiency of 1/2 covers what one-core timings can't see: xdist workers each importing
# every library and loading their own programs, uneven work at the end, and a runner slower
# than the measuring machine.
RUNNER_CORES = 4
PARALLEL_EFFICIENCY = 0.5
INSTALL_S = 600.0  # checkout, setup-python and `pip install -e '.[all]'`
ORACLE = "oracle"  # the rate of the reference side of a check (data, float64 oracle)
OVERHEAD = "per check"  # pytest and the suite around each check: collection, protocol, recording (units: 1)
KEEP = 2000  # recorded samples kept per name (the newest)
NOT_TIMED = {Verdict.UNSUPPORTED.value, Verdict.SKIPPED.value}


def units(case: Case) -> float:
    """How much work a case is for a GRU: steps x layers x directions (batch is at most a few items)."""
    return float(case.seq_len * case.num_layers * case.num_directions)


INVARIANTS = "invariants"  # the kind of an invariant check's result (its `check` is "invariant:<name>")


def run_name(backend: str, kind: str = FORWARD) -> str:
    """The rate's name: `run <backend>` for forward checks, `run <backend> (backward|invariants)` otherwise."""
    return f"run {backend}" if kind == FORWARD else f"run {backend} ({kind})"


def kind_of(record: Mapping[str, Any]) -> str:
    """forward, backward or invariants: which rate a result's timing belongs to."""
    if str(record.get("check", "")).startswith("invariant:"):
        return INVARIANTS
    return str(record.get("quantity", FORWARD))


@dataclass(frozen=True)
class Rate:
    """seconds ~ fixed + per_unit x units, fitted to `samples` timings from `basis`."""

    fixed: float
    per_unit: float
    samples: int
    basis: str

    def estimate(self, amount: float) -> float:
        return self.fixed + self.per_unit * amount


def fit(samples: Sequence[tuple[float, float]], basis: str) -> Rate | None:
    """Least squares with both coefficients kept non-negative; a constant when the units never vary."""
    if not samples:
        return None
    n = len(samples)
    mean_x = sum(x for x, _ in samples) / n
    mean_y = sum(y for _, y in samples) / n
    var = sum((x - mean_x) ** 2 for x, _ in samples)
    if var == 0:
        return Rate(mean_y, 0.0, n, basis)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in samples) / var
    intercept = mean_y - slope * mean_x
    if slope < 0:
        return Rate(mean_y, 0.0, n, basis)
    if intercept < 0:
        through_zero = sum(x * y for x, y in samples) / sum(x * x for x, _ in samples)
        return Rate(0.0, through_zero, n, basis)
    return Rate(intercept, slope, n, basis)


def reference_rates(path: Traversable = REFERENCE_TIMINGS) -> dict[str, Rate]:
    """The committed reference timings: name -> Rate (empty when the file is absent)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    return {
        name: Rate(float(r["fixed"]), float(r["per_unit"]), int(r.get("samples", 0)), "reference timings")
        for name, r in data.get("rates", {}).items()
    }


def reference_note(path: Traversable = REFERENCE_TIMINGS) -> str:
    """Where the reference timings come from (the file's `[measured] on`)."""
    try:
        measured = tomllib.loads(path.read_text(encoding="utf-8")).get("measured", {}).get("on", "")
    except FileNotFoundError:
        return ""
    return f"reference timings: conformance/declared/timings.toml, measured on {measured}"


def timings_path(root: Path | None = None) -> Path:
    return (root or cache_root()) / "timings" / "results.json"


def recorded_runs(root: Path | None = None) -> dict[str, list[tuple[float, float]]]:
    """name -> [(units, seconds)] that earlier runs recorded in this cache."""
    try:
        data = json.loads(timings_path(root).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {name: [(float(u), float(s)) for u, s in pairs] for name, pairs in data.items()}


def record_results(records: Iterable[dict[str, Any]], root: Path | None = None, loop_s: float | None = None) -> None:
    """Append a finished run's per-result timings to the cache, for the next plan's estimates.

    A backend's check is its call plus the comparison and any diagnosis (the first comparison
    of a case also derives its tolerance). The oracle's time counts once per case (it is
    cached per process; later backends see ~0). Results that never ran (unsupported,
    skipped) are not timings of a backend. `loop_s`, the wall time from collection to the
    last check less the builds, gives the per-check overhead: what pytest and the suite
    spend around the timed parts.
    """
    fresh: dict[str, list[tuple[float, float]]] = {}
    oracle: dict[str, tuple[float, float]] = {}
    results, timed = 0, 0.0
    for r in records:
        if r.get("kind") != RESULT:
            continue
        timing, case = r.get("timing", {}), Case.from_dict(r["case"])
        results += 1
        timed += sum(float(v) for k, v in timing.items() if k.endswith("_s"))  # seconds (not `runs`, a count)
        seconds = float(timing.get("reference_s", 0.0))
        if seconds > oracle.get(case.id, (0.0, 0.0))[1]:
            oracle[case.id] = (units(case), seconds)
        if "backend_s" in timing and r.get("verdict") not in NOT_TIMED:
            check = sum(float(timing.get(k, 0.0)) for k in ("backend_s", "compare_s", "diagnose_s"))
            fresh.setdefault(run_name(r["backend"], kind_of(r)), []).append((units(case), check))
    if oracle:
        fresh[ORACLE] = list(oracle.values())
    if loop_s is not None and results:
        fresh[OVERHEAD] = [(1.0, max(0.0, loop_s - timed) / results)]
    if not fresh:
        return
    merged = recorded_runs(root)
    for name, pairs in fresh.items():
        merged[name] = (merged.get(name, []) + pairs)[-KEEP:]
    path = timings_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(merged), encoding="utf-8")
    tmp.replace(path)


def _hms(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    minutes = round(seconds / 60)
    return f"{seconds:.0f} s" if seconds < 90 else f"{minutes // 60}h {minutes % 60:02d}m"


@dataclass
class BuildLine:
    builder: str
    total: int
    cached: int
    estimate_s: float | None  # of the builds still to do
    rate: Rate | None


@dataclass
class RunLine:
    name: str  # "oracle" or a backend name
    results: int
    ran: int  # results that run (the rest are unsupported or the backend is unavailable)
    estimate_s: float | None
    rate: Rate | None


@dataclass
class Plan:
    title: str
    cases: int
    results: int
    builds: list[BuildLine] = field(default_factory=list)
    runs: list[RunLine] = field(default_factory=list)

    @property
    def total_s(self) -> float:
        """The known estimates summed: one core's worth of work."""
        return sum(b.estimate_s or 0.0 for b in self.builds) + sum(r.estimate_s or 0.0 for r in self.runs)

    @property
    def unknown(self) -> list[str]:
        return [b.builder for b in self.builds if b.estimate_s is None and b.cached < b.total] + [
            r.name for r in self.runs if r.estimate_s is None and r.ran
        ]

    def lines(self) -> list[str]:
        width = max([len("checks"), *(len(b.builder) for b in self.builds), *(len(r.name) for r in self.runs)])
        out = [self.title, f"cases {self.cases}; results {self.results}"]
        out.append(f"{'builds':<{width}}  {'total':>7} {'cached':>7} {'to build':>8}  {'estimate':>9}  basis")
        for b in self.builds:
            out.append(
                f"{b.builder:<{width}}  {b.total:>7} {b.cached:>7} {b.total - b.cached:>8}  "
                f"{_hms(b.estimate_s if b.cached < b.total else 0.0):>9}  {_basis(b.rate, b.cached == b.total)}"
            )
        out.append(f"{'checks':<{width}}  {'results':>7} {'run':>7} {'':>8}  {'estimate':>9}  basis")
        for r in self.runs:
            out.append(
                f"{r.name:<{width}}  {r.results:>7} {r.ran:>7} {'':>8}  {_hms(r.estimate_s):>9}  {_basis(r.rate, not r.ran)}"
            )
        out.append(
            f"estimated: {_hms(self.total_s)} of work on one core (start-up and report not included); "
            "-n N divides the checks, ONNX exports already run in parallel processes"
        )
        if self.unknown:
            out.append(f"no timing recorded for: {', '.join(self.unknown)} (not in the estimate)")
        rates = [b.rate for b in self.builds] + [r.rate for r in self.runs]
        if any(rate is not None and rate.basis == "reference timings" for rate in rates):
            out.append(reference_note())
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "cases": self.cases,
            "results": self.results,
            "total_s": self.total_s,
            "builds": [
                {"builder": b.builder, "total": b.total, "cached": b.cached, "estimate_s": b.estimate_s}
                for b in self.builds
            ],
            "runs": [
                {"name": r.name, "results": r.results, "ran": r.ran, "estimate_s": r.estimate_s} for r in self.runs
            ],
        }


def runner_wall(work_s: float, cores: int = RUNNER_CORES) -> float:
    """A CI job's wall time, from its one-core work (see RUNNER_CORES)."""
    return INSTALL_S + work_s / (cores * PARALLEL_EFFICIENCY)


def _basis(rate: Rate | None, nothing_to_do: bool) -> str:
    if nothing_to_do:
        return ""
    if rate is None:
        return "no timing recorded"
    return f"{rate.basis} ({rate.samples} samples)"


def _rate(name: str, samples: Sequence[tuple[float, float]], reference: dict[str, Rate]) -> Rate | None:
    """This cache's own timings once there are a few, else the reference timings."""
    if len(samples) >= 3:
        return fit(samples, "this cache")
    return reference.get(name) or fit(samples, "this cache")


def make(
    title: str,
    cases: list[Case],
    backends: list[Backend],
    root: Path | None = None,
    reference: dict[str, Rate] | None = None,
    per_backend: Mapping[str, list[Case]] | None = None,
    quantities: Sequence[str] = (FORWARD,),
    invariants: Sequence[Callable[[Case], bool]] = (),
) -> Plan:
    """The plan of running `cases` on `backends`, from what the caches under `root` hold and recorded.
    `per_backend` (backend name -> its planned cases: the shared ones and its own covering extras,
    `conformance.plan`) replaces `cases` for the backends it names. `quantities` are the checks each
    planned case gets (forward, backward: a backward check builds what `PreparingBackward.plan_backward`
    lists); `invariants` (each invariant's `applies`) run on the shared `cases` of every backend, as the
    run parametrizes them."""
    reference = reference_rates() if reference is None else reference
    runs = recorded_runs(root)

    def planned(backend: Backend) -> list[Case]:
        return list(per_backend.get(backend.name, cases)) if per_backend is not None else cases

    invariant_checks = sum(1 for c in cases for applies in invariants if applies(c))
    results = sum(len(planned(b)) * len(quantities) + invariant_checks for b in backends)
    plan = Plan(title, len(cases), results)
    oracle = _rate(ORACLE, runs.get(ORACLE, []), reference)
    overhead = _rate(OVERHEAD, runs.get(OVERHEAD, []), reference)
    plan.runs.append(
        RunLine(OVERHEAD, plan.results, plan.results, overhead.fixed * plan.results if overhead else None, overhead)
    )
    plan.runs.append(
        RunLine(
            ORACLE, len(cases), len(cases), sum(oracle.estimate(units(c)) for c in cases) if oracle else None, oracle
        )
    )
    needed: dict[str, dict[str, Build]] = {}
    recorded: dict[str, dict[str, tuple[float, float]]] = {}  # builder -> key -> (units, seconds)
    for backend in backends:
        available = backend.availability().available
        mine = planned(backend)
        supported = [c for c in mine if backend.supports(c) is None] if available else []
        differentiates = checks_backward(backend)
        kinds: list[tuple[str, int, list[Case]]] = []
        if FORWARD in quantities:
            kinds.append((FORWARD, len(mine), supported))
        if BACKWARD in quantities:
            kinds.append((BACKWARD, len(mine), supported if differentiates else []))
        if invariants:
            shared = {c.id for c in cases}
            applying = [c for c in supported if c.id in shared for applies in invariants if applies(c)]
            kinds.append((INVARIANTS, invariant_checks, applying))
        for kind, count, ran in kinds:
            name = run_name(backend.name, kind)
            rate = _rate(name, runs.get(name, []), reference)
            estimate = sum(rate.estimate(units(c)) for c in ran) if rate else None
            plan.runs.append(RunLine(name.removeprefix("run "), count, len(ran), estimate, rate))
        if isinstance(backend, Planning) and supported:
            for build in _builds(backend, supported, quantities):
                needed.setdefault(build.builder, {})[build.key] = build
            for build in backend.recorded():
                if build.seconds is not None:
                    recorded.setdefault(build.builder, {})[build.key] = (build.units, build.seconds)
    for builder, builds in needed.items():
        samples = list(recorded.get(builder, {}).values())
        rate = _rate(builder, samples, reference)
        todo = [b for b in builds.values() if not b.cached]
        estimate = sum(rate.estimate(b.units) for b in todo) if rate else None
        plan.builds.append(BuildLine(builder, len(builds), len(builds) - len(todo), estimate, rate))
    return plan


def _builds(backend: Planning, cases: list[Case], quantities: Sequence[str]) -> list[Build]:
    """What checking `quantities` on these cases builds: the forward's builds; for the backward, a
    `PreparingBackward` backend's own, what any other differentiable backend's forward builds, and
    nothing for a backend whose backward check is refused (`checks_backward`)."""
    backward = BACKWARD in quantities and isinstance(backend, Backend) and checks_backward(backend)
    own = backward and isinstance(backend, PreparingBackward)
    builds = backend.plan(cases) if FORWARD in quantities or (backward and not own) else []
    return builds + (backend.plan_backward(cases) if own and isinstance(backend, PreparingBackward) else [])
