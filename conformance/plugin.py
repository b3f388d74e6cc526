"""The pytest side: options, parametrization over (case, backend), result recording.

Registered by the `pytest11` entry point (pyproject.toml) under its module name, so wherever the
package is installed `pytest --pyargs conformance` (or `pytest conformance` in a checkout) has the
options. Options are all it adds to other test suites: the run (backend selection, the matrix, the
results file, the report) starts only when the command line names this package or a file in it
(`activate`), or, failing that, when pytest collects one of its test modules. Under pytest-xdist
each worker appends to its own results file; the controller merges them when the session ends.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import re
import shlex
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pytest

from conformance import (
    accounting,
    cross_device,
    divergences,
    estimate,
    matrix,
    progress,
    selection,
    sharding,
    time_limit,
)
from conformance import invariants as invariant_checks
from conformance import plan as planning
from conformance.backend_summary import BackendSummary, summarize
from conformance.case import Case, CaseError
from conformance.contract import (
    Availability,
    Backend,
    Differentiable,
    Preparing,
    PreparingBackward,
    checks_backward,
    declared_form,
    first_line,
)
from conformance.coverage import Space
from conformance.diagnosis import registry_variant_ids
from conformance.engine import ORACLE, check, check_backward
from conformance.environment import environment
from conformance.pipeline import Attempts, Reference
from conformance.probing import probe
from conformance.records import (
    BACKEND,
    BACKWARD,
    END,
    FORWARD,
    PROBE,
    QUANTITIES,
    RESULT,
    CrossDeviceResult,
    Result,
    ResultsWriter,
    merge_worker_files,
    read_records,
    rerun_command,
    worker_path,
)
from conformance.schema import clobbers
from conformance.time_limit import TimeLimit, capture
from conformance.vectors import VectorsError, VectorsReference, check_integrity
from conformance.verdict import Verdict

DEFAULT_RESULTS = Path("reports/out/results.jsonl")
DEFAULT_REPORT = Path("reports/out/report.html")
PACKAGE_DIR = Path(__file__).resolve().parent  # holds the conformance test modules
CASE_FIELD_NAMES = tuple(f.name for f in fields(Case))
RUN_KEY = pytest.StashKey["ConformanceRun"]()
REPORT_KEY = pytest.StashKey[str]()  # where the report went, for the terminal summary
PLAN_KEY = pytest.StashKey[bool]()  # `--plan`: print the plan, run nothing
# `--quantity`: what the run checks. Each test function checks one quantity; one that --quantity leaves
# out is parametrized with a single NOT_SELECTED placeholder, which collection then deselects.
QUANTITY_CHOICES = {"forward": (FORWARD,), "backward": (BACKWARD,), "both": QUANTITIES}
QUANTITY_OF_TEST = {
    "test_gru": FORWARD,
    "test_gru_backward": BACKWARD,
    "test_cross_device": FORWARD,
    "test_invariant": FORWARD,
}
NOT_SELECTED = "not-selected-by---quantity"


@dataclass
class ConformanceRun:
    """Everything a test needs, built once per process from the options."""

    cases: list[Case]
    backends: list[Backend]
    registry: list[divergences.Divergence]
    writer: ResultsWriter
    results_path: Path
    precision: str
    worker: str
    tests: planning.Plan  # the (case, backend) tests: shared, each backend's extras, probes
    shape: accounting.RunShape  # what decides whether a backend's shortfall fails the run
    described: set[str] = field(default_factory=set)
    verdicts: Counter[str] = field(default_factory=Counter)
    accounts: list[accounting.Account] = field(default_factory=list)  # per backend, at the end (controller)
    plan_shown: bool = False
    reference: Reference = ORACLE  # or stored vectors (--vectors)
    rerun_args: tuple[str, ...] = ()  # options a rerun command needs besides backend, case and reference
    probes: dict[str, str] = field(default_factory=dict)  # --explain: backend -> what its probe found
    limit: TimeLimit = field(default_factory=TimeLimit)  # --case-timeout
    warnings: list[str] = field(default_factory=list)  # shown in the terminal summary (registry, prepare)
    quantities: tuple[str, ...] = QUANTITIES  # --quantity: forward, backward or both
    invariants: list[invariant_checks.Invariant] = field(default_factory=list)  # the tier's ([invariants])
    attempts: Attempts = field(default_factory=Attempts)  # case runs kept for the invariants of the same pair
    space: Callable[[], Space] | None = None  # the matrix's space, built on demand (`conformance.plan.space`)
    collecting_since: float | None = None  # when collection began (the plan's per-check overhead)
    prepare_s: float = 0.0  # building ahead (exports, programs): timed apart from the checks

    def prepare(self, items: list[pytest.Item], reporter: progress.Reporter | None = None) -> list[str]:
        """Let backends that build models up front (ONNX exports, JAX programs) build all they will need at once,
        reporting progress (what, i of n, elapsed) to `reporter`.

        Cases a backend refuses statically are left out (nothing to build), except the probes.
        A backend whose `prepare` raises is not prepared (its cases then build lazily, or fail as results);
        the problems are returned for a warning. A `PreparingBackward` backend gets its backward checks'
        cases apart (`prepare_backward`), so a forward-only run builds no gradient program."""
        wanted: dict[str, list[Case]] = {}
        wanted_backward: dict[str, list[Case]] = {}  # PreparingBackward backends: the backward checks' cases
        for item in items:
            params = getattr(item, "callspec", None)
            if params is None or not {"case", "backend"} <= set(params.params) or not params.params["backend"]:
                continue
            backend = params.params["backend"]
            backward = QUANTITY_OF_TEST.get(getattr(item, "originalname", "")) == BACKWARD
            if backward and not checks_backward(backend):
                continue  # its backward check is refused before any model is built
            if not _prepares(backend):
                continue
            case = params.params["case"]
            if planning.supports_of(backend)(case) is not None and self.tests.probe(backend.name, case.id) is None:
                continue  # refused statically: nothing to build
            own = backward and isinstance(backend, PreparingBackward)
            cases = (wanted_backward if own else wanted).setdefault(backend.name, [])
            extra = params.params["invariant"].cases(params.params["case"]) if "invariant" in params.params else []
            for needed in [case, *extra]:  # an invariant's transformed copies need models too
                if needed not in cases:  # the forward and the backward test share a case
                    cases.append(needed)
        problems: list[str] = []
        started = time.perf_counter()
        with progress.reporting(reporter):
            for backend in self.backends:
                for backward, needed in ((False, wanted.get(backend.name)), (True, wanted_backward.get(backend.name))):
                    if needed and isinstance(backend, PreparingBackward if backward else Preparing):
                        problem = _prepare(backend, needed, backward)
                        if problem:
                            problems.append(problem)
        self.prepare_s += time.perf_counter() - started
        return problems

    def describe_once(self, backend: Backend) -> None:
        """The backend record before its first result (whichever check comes first), once per process."""
        if backend.name not in self.described:
            self.described.add(backend.name)
            self.describe(backend)

    def describe(self, backend: Backend) -> None:
        """The backend record, once per backend: availability and notes, whatever the adapter does."""
        tried = capture(lambda: backend.availability())
        availability = tried.value if isinstance(tried.value, Availability) else None
        notes: Any = {}
        if availability is not None and availability.available:
            described = capture(lambda: backend.describe())
            notes = described.value  # notes are informative; never fail a run over them
            if described.error is not None:
                notes = {"describe_error": first_line(described.error)}
            elif not isinstance(notes, dict):
                notes = {"describe_error": f"describe returned {type(notes).__name__}; expected a dict"}
            elif (problem := _not_json(notes)) is not None:
                notes = {"describe_error": f"describe returned notes that aren't JSON data: {problem}"}
        if availability is not None:
            said = availability.describe()
        elif tried.error is not None:
            said = f"availability() raised {first_line(tried.error)}"
        else:
            said = f"availability returned {type(tried.value).__name__}; expected Availability"
        self.writer.write(
            {
                "kind": BACKEND,
                "backend": backend.name,
                "family": backend.family,
                "device": backend.device,
                "available": bool(availability and availability.available),
                "availability": said,
                "notes": notes,
                "form": declared_form(backend).describe(),
            }
        )

    def check(self, backend: Backend, case: Case, quantity: str = FORWARD) -> Result:
        """One (backend, case, quantity) result, written before it is returned: exactly one record, whatever
        happens. `quantity` forward checks the outputs (`engine.check`), backward the gradients (`check_backward`).
        Both run the plan's tests; a probe of a declared refusal is attempted by the forward check (the library's
        refusal to run the case is what confirms it), and the backward check of that pair reports the refusal."""
        self.describe_once(backend)
        probe = self.tests.probe(backend.name, case.id) if quantity == FORWARD else None
        try:
            if quantity == BACKWARD:
                result = check_backward(
                    backend,
                    case,
                    self.reference,
                    self.registry,
                    self.precision,
                    self.rerun_args,
                    limit=self.limit,
                )
            else:
                shared = self.attempts if any(i.applies(case) for i in self.invariants) else None
                result = check(
                    backend,
                    case,
                    self.reference,
                    self.registry,
                    self.precision,
                    self.rerun_args,
                    limit=self.limit,
                    attempts=shared,
                    probe=probe,
                )
        except KeyboardInterrupt:
            raise
        except BaseException as error:  # the pipeline catches what backends do; this is the last line of defence
            result = Result(
                case=case,
                backend=backend.name,
                family=backend.family,
                device=backend.device,
                verdict=Verdict.ERROR,
                reason=f"the check itself failed: {first_line(error)}",
                rerun=rerun_command(
                    case, backend.name, self.precision, [*self.rerun_args, *self.reference.rerun_args], quantity
                ),
                precision=self.precision,
                reference=self.reference.name,
                quantity=quantity,
            )
        self.writer.write(result.as_record())
        self.verdicts[result.verdict.value] += 1
        return result

    def check_invariant(self, backend: Backend, case: Case, invariant: invariant_checks.Invariant) -> Result:
        """One invariant of one (backend, case), recorded as a result whose `check` is `invariant:<name>`."""
        self.describe_once(backend)
        result = invariant_checks.check(
            backend,
            case,
            invariant,
            self.registry,
            self.precision,
            self.rerun_args,
            lambda c: self.reference.load(c)[:2],
            self.attempts,
            self.limit,
        )
        self.writer.write(result.as_record())
        self.verdicts[result.verdict.value] += 1
        return result

    def check_devices(self, pair: cross_device.DevicePair, case: Case) -> CrossDeviceResult:
        """The cross-device check of one case, recorded as a `cross_device` record."""
        result = cross_device.check(pair, case, self.precision, lambda c: self.reference.load(c)[:2], self.limit)
        self.writer.write(result.as_record())
        return result


def _prepares(backend: Backend) -> bool:
    return isinstance(backend, Preparing)


def _not_json(value: Any) -> str | None:
    try:
        json.dumps(value, sort_keys=True)
    except (TypeError, ValueError) as error:
        return str(error)
    return None


def _prepare(backend: Backend, cases: list[Case], backward: bool = False) -> str | None:
    """Prepare one available backend (`prepare`, or `prepare_backward` for the backward checks' cases);
    what went wrong, if anything (never raises for what the adapter does)."""
    available = capture(lambda: backend.availability().available)
    if available.value is not True:
        return None
    method = "prepare_backward" if backward else "prepare"
    done = capture(lambda: getattr(backend, method)(cases))
    if done.error is None:
        return None
    return f"{backend.name}: {method}() raised {first_line(done.error)}; its cases run unprepared"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conformance", "GRU conformance suite")
    group.addoption(
        "--backends",
        action="append",
        default=None,
        help="comma-separated backend families or names (globs allowed), e.g. 'torch,onnx-spec' or "
        "'torch[cpu]'; default: every installed family",
    )
    group.addoption("--tier", default="pairwise", help=f"case tier: {', '.join(matrix.TIERS)} (default: pairwise)")
    group.addoption(
        "--quantity",
        default="both",
        choices=tuple(QUANTITY_CHOICES),
        help="what to check: forward (outputs, test_gru), backward (gradients of a fixed loss against the float64 "
        "backpropagation oracle, test_gru_backward) or both (default)",
    )
    group.addoption(
        "--case", action="append", default=None, metavar="CASE_ID", help="run exactly this case id (overrides --tier)"
    )
    group.addoption(
        "--invariant",
        action="append",
        default=None,
        metavar="NAME",
        help="run this invariant check (repeatable; conformance/invariants.py); default: the tier's [invariants] "
        "in the matrix file, none with --case",
    )
    group.addoption("--device", default="all", help="cpu, cuda or all (default: all devices detected here)")
    group.addoption(
        "--seed",
        type=int,
        default=None,
        help="data seed for every case of the tier, a non-negative integer (default: 0); "
        "not with --case (a case id carries its seed) or --vectors",
    )
    group.addoption(
        "--case-timeout",
        type=float,
        default=time_limit.DEFAULT_SECONDS,
        metavar="SECONDS",
        help=f"time limit on each backend run() (default: {time_limit.DEFAULT_SECONDS:g}; 0: none). An in-process "
        "call that overruns can't be stopped: its result is error, it goes on in a background thread, and that "
        "backend's later cases are error without being called; an out-of-process backend's worker is killed "
        "instead, and a new one runs its next case",
    )
    group.addoption(
        "--shard",
        default=None,
        metavar="I/N",
        help="run only shard I of N (1-based) of the selected cases; the N shards partition them exactly",
    )
    group.addoption(
        "--precision",
        default="strict",
        help="strict (TF32 off, highest matmul precision; default) or default (each library's out-of-box settings)",
    )
    group.addoption(
        "--results",
        default=str(DEFAULT_RESULTS),
        help=f"JSON-lines results file (default: {DEFAULT_RESULTS}); relative output paths are under the "
        "current directory",
    )
    group.addoption(
        "--backend-module",
        action="append",
        default=[],
        metavar="PKG.MODULE:FACTORY",
        help="load a third-party backend factory without installing an entry point",
    )
    group.addoption(
        "--matrix", default=None, help="matrix file (default: the one shipped in the package, conformance/declared/)"
    )
    group.addoption(
        "--divergences",
        default=None,
        help="known-divergence registry file (default: the one shipped in the package, conformance/declared/)",
    )
    group.addoption(
        "--report",
        default=str(DEFAULT_REPORT),
        help=f"HTML report rendered at the end (default: {DEFAULT_REPORT}, under the current directory)",
    )
    group.addoption("--no-report", action="store_true", help="don't render the HTML report")
    group.addoption(
        "--plan",
        action="store_true",
        help="print what the run would do and stop: cases, results, exports and compiles (how many cached), "
        "and an estimated time from the timings the caches recorded",
    )
    group.addoption(
        "--explain",
        action="store_true",
        help="after the run, rerun each failing case with one field changed at a time (within the matrix's "
        "values) on the same backend, to find which single changes make the failure pass",
    )
    group.addoption(
        "--explain-budget",
        type=int,
        default=40,
        metavar="N",
        help="--explain runs at most N extra cases per failing backend (default: 40)",
    )
    group.addoption(
        "--vectors",
        default=None,
        metavar="DIR",
        help="take cases and expected values from stored vectors (e.g. fixtures/vectors/pairwise) instead of "
        "the live oracle; --case selects among them, --tier and --matrix are ignored, --seed is refused",
    )


def _worker_id(config: pytest.Config) -> str:
    workerinput = getattr(config, "workerinput", None)
    return workerinput["workerid"] if workerinput else "main"


def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [token.strip() for value in values for token in value.split(",") if token.strip()]


def _check_options(opt: Any) -> None:
    """Options that are wrong on their own or together; every one is a usage error that says what is valid."""
    if opt.precision not in ("strict", "default"):
        raise pytest.UsageError(f"--precision: unknown mode {opt.precision!r}; valid: strict, default")
    if opt.tier not in matrix.TIERS:
        raise pytest.UsageError(f"--tier: unknown tier {opt.tier!r}; valid tiers: {', '.join(matrix.TIERS)}")
    if opt.seed is not None and opt.seed < 0:
        raise pytest.UsageError(f"--seed: expected a non-negative integer, got {opt.seed}")
    if opt.seed is not None and opt.case:
        example = Case.from_id(opt.case[0]).id.rsplit("-s", 1)[0] if _is_case_id(opt.case[0]) else "I5H6-...-xsame"
        raise pytest.UsageError(
            f"--seed {opt.seed} with --case: a case id carries its own seed (its '-sN' suffix), so --seed would be "
            f"ignored; drop --seed, or put the seed in the id: {example}-s{opt.seed}"
        )
    if opt.seed is not None and opt.vectors:
        raise pytest.UsageError(f"--seed {opt.seed} with --vectors: stored vectors fix their own seed; drop --seed")
    if not math.isfinite(opt.case_timeout) or opt.case_timeout < 0:
        raise pytest.UsageError(f"--case-timeout: expected seconds >= 0 (0: no limit), got {opt.case_timeout}")


def _is_case_id(text: str) -> bool:
    try:
        Case.from_id(text)
    except CaseError:
        return False
    return True


def _output_paths(config: pytest.Config, results_path: Path) -> None:
    """Refuse an output that would overwrite an input or another output (`--results X --report X`)."""
    opt = config.option
    outputs: list[tuple[str, Path | None]] = [("--results", results_path)]
    if not opt.no_report:
        from reports.render import default_summary_path

        report = _output_path(config, opt.report)
        outputs += [("--report", report), ("the report's summary", default_summary_path(report))]
    inputs: list[tuple[str, Path | None]] = [
        ("--matrix", Path(opt.matrix) if opt.matrix else matrix.DEFAULT_MATRIX),
        ("--divergences", Path(opt.divergences) if opt.divergences else divergences.DEFAULT_REGISTRY),
    ]
    if opt.vectors:
        inputs += [("the --vectors manifest", Path(opt.vectors) / "manifest.json")]
    clashes = clobbers(outputs, inputs)
    if clashes:
        raise pytest.UsageError("refusing to overwrite an input: " + "; ".join(clashes))
    for label, path in outputs:
        if path is not None and path.is_dir():
            raise pytest.UsageError(f"{label} {path}: is a directory; expected a file path")


def _oversized(cases: list[Case]) -> None:
    for case in cases:
        too_big = case.excess()
        if too_big:
            raise pytest.UsageError(f"case {case.id}: refused up front, too large: {too_big}")


def _warn_unmatchable(config: pytest.Config, run: ConformanceRun) -> None:
    """Registry entries (or parts of them) that can never match in this run: a warning each, by id, shown
    at the end with the verdicts (pytest's own warnings would point at this file, not the registry)."""
    opt = config.option
    domain: dict[str, set[Any]] = {name: {getattr(c, name) for c in run.cases} for name in CASE_FIELD_NAMES}
    try:
        for name, values in matrix.load(Path(opt.matrix) if opt.matrix else matrix.DEFAULT_MATRIX)[
            "dimensions"
        ].items():
            domain[name] |= set(values)
    except matrix.MatrixError:
        pass  # --case and --vectors runs don't need the matrix; a tier run has already loaded it
    families = set(selection.entry_point_families()) | {b.family for b in run.backends}
    families |= {re.split(r"[\[/]", b.name, maxsplit=1)[0] for b in run.backends}
    for message in divergences.unmatchable(run.registry, domain, families, run.quantities):
        run.warnings.append(f"{opt.divergences}: {message}")


@dataclass(frozen=True)
class Selected:
    """What the options select: the run builds from it, and `--plan` estimates it without running."""

    cases: list[Case]  # the shard's shared cases
    reference: Reference
    backends: list[Backend]
    registry: list[divergences.Divergence]
    invariants: list[invariant_checks.Invariant]
    tests: planning.Plan  # every (case, backend) test of the shard: shared, each backend's extras, probes
    tier: str  # a tier name, or "case" / "vectors"
    strength: int | None  # the covering strength of the tier, None for tiers that cover nothing

    def cases_of(self) -> dict[str, list[Case]]:
        """backend name -> the cases it is planned to run (shared and its own extras)."""
        planned: dict[str, list[Case]] = {}
        for item in self.tests.items:
            planned.setdefault(item.backend.name, []).append(item.case)
        return planned


def _selection(config: pytest.Config) -> Selected:
    """The cases (tier, shard), their reference, the backends, the registry, the invariants and the test plan
    the options select."""
    opt = config.option
    _check_options(opt)
    seed = 0 if opt.seed is None else opt.seed
    reference: Reference = ORACLE
    matrix_path = _matrix_path(opt)
    try:
        if opt.vectors:
            cases, reference = _vectors_cases(opt.vectors, opt.case)
            _oversized(cases)
        elif opt.case:
            cases = [Case.from_id(case_id) for case_id in opt.case]
            _oversized(cases)
        else:
            cases = matrix.cases(opt.tier, seed, matrix_path)
            # Declared extras every tier adds, on every backend; outside the matrix's space (lengths "zero"
            # isn't one of its values), so they count for no backend's own pair coverage plan.
            cases += [c for c in matrix.zero_length(seed, matrix_path) if c not in cases]
        shard = sharding.parse(opt.shard) if opt.shard else None
        backends = selection.select(_split(opt.backends), opt.device, opt.backend_module, opt.precision)
        tier = "vectors" if opt.vectors else "case" if opt.case else opt.tier
        strength = planning.STRENGTH.get(tier)
        space = planning.space(matrix.load(matrix_path), seed, strength) if strength else None
        plan = planning.build(cases, backends, space).shard(shard)
        cases = plan.cases
        registry = divergences.load(
            Path(opt.divergences) if opt.divergences else divergences.DEFAULT_REGISTRY,
            variants=registry_variant_ids(),
        )
        # --invariant names them; --case reruns exactly the cases named (no invariant unless named); vectors hold none.
        if opt.invariant:
            invariant_names = _split(opt.invariant) or []
        elif opt.case or opt.vectors:
            invariant_names = []
        else:
            invariant_names = matrix.invariants(opt.tier, matrix_path)
        invariant_list = invariant_checks.named(invariant_names, "--invariant")
    except (
        CaseError,
        matrix.MatrixError,
        selection.SelectionError,
        divergences.RegistryError,
        sharding.ShardError,
        invariant_checks.InvariantError,
    ) as error:
        raise pytest.UsageError(str(error)) from None
    return Selected(cases, reference, backends, registry, invariant_list, plan, tier, strength)


def _build_run(config: pytest.Config) -> ConformanceRun:
    opt = config.option
    seed = 0 if opt.seed is None else opt.seed
    selected = _selection(config)
    cases, reference, backends, registry = selected.cases, selected.reference, selected.backends, selected.registry
    invariant_list, plan, tier, strength = selected.invariants, selected.tests, selected.tier, selected.strength
    matrix_path = _matrix_path(opt)
    worker = _worker_id(config)
    results_path = _output_path(config, opt.results)
    _output_paths(config, results_path)
    workerinput = getattr(config, "workerinput", None)
    try:
        if workerinput:
            run_id = workerinput.get("conformance_run_id")
            if run_id is None:  # the controller didn't start the run: it didn't see this package named
                raise pytest.UsageError(
                    "under pytest-xdist, name the conformance suite on the command line: "
                    "`pytest conformance` in a checkout, `pytest --pyargs conformance` anywhere"
                )
            writer = ResultsWriter(worker_path(results_path, worker), run_id, worker)
        else:
            run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
            results_path.parent.mkdir(parents=True, exist_ok=True)
            for stale in results_path.parent.glob(f"{results_path.stem}.gw*{results_path.suffix}"):
                stale.unlink()
            results_path.write_text("", encoding="utf-8")  # one file per run
            writer = ResultsWriter(results_path, run_id, worker)
    except OSError as error:
        raise pytest.UsageError(f"--results {results_path}: can't write there: {error.strerror or error}") from None
    if not workerinput:
        seeds = sorted({c.seed for c in cases})
        writer.write(
            environment(
                {
                    "tier": tier,
                    "cases": len(cases),
                    "tests": len(plan.items),
                    "plan": {name: b.as_dict() for name, b in plan.backends.items()},
                    "seed": seed if not (opt.case or opt.vectors) else seeds[0] if len(seeds) == 1 else None,
                    "device": opt.device,
                    "precision": opt.precision,
                    "backends": [b.name for b in backends],
                    "quantity": opt.quantity,
                    "matrix": str(opt.matrix or matrix.DEFAULT_MATRIX),
                    "shard": opt.shard,
                    "vectors": opt.vectors,
                    "case_timeout_s": opt.case_timeout,
                    "time_limit": TimeLimit(opt.case_timeout).describe(),
                }
            )
            | {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        )
    named = frozenset(b.name for b in backends if any(t in (b.name, b.family) for t in _split(opt.backends) or []))
    return ConformanceRun(
        cases,
        backends,
        registry,
        writer,
        results_path,
        opt.precision,
        worker,
        plan,
        accounting.RunShape(
            tier,
            strength is not None,
            opt.shard,
            strength or 2,
            plan.dimensions,
            named,
            FORWARD if FORWARD in QUANTITY_CHOICES[opt.quantity] else BACKWARD,
            frozenset(b.name for b in backends if isinstance(b, Differentiable)),
        ),
        reference=reference,
        rerun_args=_rerun_args(opt),
        space=lambda: planning.space(matrix.load(matrix_path), seed),
        limit=TimeLimit(opt.case_timeout),
        quantities=QUANTITY_CHOICES[opt.quantity],
        invariants=invariant_list,
    )


def _matrix_path(opt: Any) -> Any:
    return Path(opt.matrix) if opt.matrix else matrix.DEFAULT_MATRIX


def _output_path(config: pytest.Config, path: str) -> Path:
    """Relative output paths are under the directory pytest was started in, like any command-line path.

    Not under pytest's rootdir: run installed (`pytest --pyargs conformance`), that is the user's own
    project, which may be far from where they asked for the results.
    """
    return Path(path) if Path(path).is_absolute() else config.invocation_params.dir / path


def enact(verdict: Verdict, message: str) -> None:
    """Turn a verdict into its pytest outcome (`Verdict.outcome`): the one place both test functions use."""
    outcome = verdict.outcome
    if outcome == "skipped":
        pytest.skip(f"{verdict.value}: {message}")
    if outcome == "xfailed":  # pytest.xfail, without the traceback pytest would format and drop (slow)
        raise pytest.xfail.Exception(f"{verdict.value}: {message}", pytrace=False)
    if outcome == "failed":
        pytest.fail(f"{verdict.value}: {message}", pytrace=False)


def _rerun_args(opt: Any) -> tuple[str, ...]:
    args: list[str] = []
    for spec in opt.backend_module:
        args += ["--backend-module", spec]
    if opt.divergences:
        args += ["--divergences", str(opt.divergences)]
    if opt.pyargs:  # run installed: `pytest conformance --pyargs` finds the package from any directory
        args.append("--pyargs")
    if opt.case_timeout != time_limit.DEFAULT_SECONDS:
        args += ["--case-timeout", f"{opt.case_timeout:g}"]
    return tuple(args)


def _vectors_cases(root: str, case_ids: list[str] | None) -> tuple[list[Case], Reference]:
    """Cases and reference from stored vectors, integrity-checked up front so a damaged file stops the run."""
    try:
        stored = VectorsReference(Path(root))
        manifest = stored.manifest
        cases = [manifest.entry(case_id).case for case_id in case_ids or manifest.cases]
    except VectorsError as error:
        raise pytest.UsageError(f"--vectors: {error}") from None
    problems = check_integrity(manifest, [case.id for case in cases])
    if problems:
        raise pytest.UsageError("--vectors: the vectors failed their integrity check:\n" + "\n".join(problems))
    return cases, Reference(root, stored, ("--vectors", root), load_backward=stored.gradients)


@pytest.hookimpl(trylast=True)  # after the terminal's `collected N items`
def pytest_collection_finish(session: pytest.Session) -> None:
    """Print the plan; outside xdist, build models up front (under xdist each worker builds lazily, no duplicate
    exports)."""
    run = session.config.stash.get(RUN_KEY, None)
    if run is None or run.worker != "main":
        return
    terminal = session.config.pluginmanager.get_plugin("terminalreporter")
    quiet = session.config.option.verbose < -1  # -qq
    if terminal is not None and terminal.verbosity >= 0 and not run.plan_shown:  # activated by collection
        run.plan_shown = True
        for line in plan_lines(run.tests, run.shape.tier):
            terminal.write_line(line)
    if session.items:
        _short_summary(session.config)
        reporter = None if terminal is None or quiet else progress.TerminalProgress(terminal)
        for problem in run.prepare(session.items, reporter):
            run.warnings.append(problem)


def pytest_report_header(config: pytest.Config) -> list[str]:
    """The plan (the tier's size per backend) under pytest's header, when the command line started the run."""
    run = config.stash.get(RUN_KEY, None)
    if run is None or run.worker != "main":
        return []
    run.plan_shown = True
    return plan_lines(run.tests, run.shape.tier)


@pytest.hookimpl(tryfirst=True)
def pytest_collection(session: pytest.Session) -> bool | None:
    """`--plan`: print the plan of the selected run instead of collecting (tens of thousands of items, for full)."""
    config = session.config
    run = config.stash.get(RUN_KEY, None)
    if run is not None:
        run.collecting_since = time.perf_counter()
    if not config.stash.get(PLAN_KEY, False):
        return None
    selected = _selection(config)
    opt = config.option
    parts = [f"tier {opt.tier}" if not (opt.case or opt.vectors) else "selected cases"]
    parts += [f"shard {opt.shard}"] if opt.shard else []
    parts += [f"device {opt.device}", f"{len(selected.backends)} backends"]
    made = estimate.make(
        "GRU conformance estimate: " + ", ".join(parts),
        selected.cases,
        selected.backends,
        per_backend=selected.cases_of(),
        quantities=QUANTITY_CHOICES[opt.quantity],
        invariants=[i.applies for i in selected.invariants],
    )
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    for line in made.lines():
        if terminal is not None:
            terminal.write_line(line)
        else:
            print(line)
    return True


def _short_summary(config: pytest.Config) -> None:
    """A conformance run ends short: failures only in pytest's short summary (xfail and skip reasons, one per
    convention or unsupported case, are in the report). An explicit `-r` or `-v` keeps pytest's own choice."""
    args = [*config.invocation_params.args, *shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))]
    explicit = any(a.startswith("--report-chars") or (a.startswith("-r") and not a.startswith("--")) for a in args)
    if explicit or config.option.verbose > 0:
        return
    config.option.reportchars = "fE"
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    if terminal is not None:
        terminal.reportchars = "fE" if config.option.disable_warnings else "wfE"


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    if session.config.stash.get(RUN_KEY, None) is not None:
        _short_summary(session.config)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "conformance: a GRU conformance check")
    if _names_this_suite(config) and config.option.plan and not config.option.help:
        config.stash[PLAN_KEY] = True  # a plan starts no run: no results file, no report
    elif _names_this_suite(config) and not config.option.help:
        activate(config)  # before collection, so a bad option is a usage error and xdist workers get the run id
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(config), "conformance-xdist")


def activate(config: pytest.Config) -> ConformanceRun:
    """The run of this process, built on first use: select backends, load the matrix, open the results file."""
    run = config.stash.get(RUN_KEY, None)
    if run is None:
        run = config.stash[RUN_KEY] = _build_run(config)
        if run.worker == "main":
            _warn_unmatchable(config, run)
    return run


def _names_this_suite(config: pytest.Config) -> bool:
    """Whether a command-line argument (or testpaths entry) is this package or a file in it.

    `conformance`, `conformance/test_gru.py::test_gru[...]`, or with --pyargs `conformance` and
    `conformance.test_gru`. An argument that only contains the package (`pytest .` in a checkout)
    leaves the decision to collection (`pytest_generate_tests`).
    """
    for arg in config.args:
        name = arg.split("::")[0]
        target: Path | None = None
        if config.option.pyargs and name.split(".")[0] == __package__:
            try:
                spec = importlib.util.find_spec(name)
            except ImportError:
                spec = None
            if spec is not None and spec.origin:
                target = Path(spec.origin).parent if spec.submodule_search_locations else Path(spec.origin)
        if target is None:
            target = config.invocation_params.dir / name
        target = target.resolve()
        if target == PACKAGE_DIR or PACKAGE_DIR in target.parents:
            return True
    return False


def _is_conformance_module(path: Path) -> bool:
    return path.resolve().parent == PACKAGE_DIR


class _XdistHooks:
    """Hands the controller's run id to every worker so all files belong to one run."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        run = self.config.stash.get(RUN_KEY, None)
        if run is not None:
            node.workerinput["conformance_run_id"] = run.writer.run_id


def _not_selected(metafunc: pytest.Metafunc, run: ConformanceRun, names: tuple[str, ...]) -> bool:
    """A test function whose quantity `--quantity` leaves out gets one placeholder, deselected at collection."""
    quantity = QUANTITY_OF_TEST.get(metafunc.definition.originalname)
    if quantity is None or quantity in run.quantities:
        return False
    metafunc.parametrize(names, [pytest.param(*[None] * len(names), id=NOT_SELECTED)])
    return True


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if not _is_conformance_module(metafunc.definition.path):
        return  # another suite's `case` and `backend` are its own business
    if {"case", "backend"} <= set(metafunc.fixturenames) and "invariant" not in metafunc.fixturenames:
        run = activate(metafunc.config)
        if _not_selected(metafunc, run, ("case", "backend")):
            return
        items = run.tests.items  # the plan's (case, backend) tests: the forward and the backward check alike
        metafunc.parametrize(("case", "backend"), [(p.case, p.backend) for p in items], ids=[p.id for p in items])
    if {"case", "backend", "invariant"} <= set(metafunc.fixturenames):
        run = activate(metafunc.config)
        if _not_selected(metafunc, run, ("case", "backend", "invariant")):
            return
        triples = [  # over the tier's shared cases on every backend (not the extras: README § Invariants)
            pytest.param(case, backend, invariant, id=f"{invariant.name}-{backend.name}-{case.id}")
            for case in run.cases
            for backend in run.backends
            for invariant in run.invariants
            if invariant.applies(case)
        ]
        if not triples:  # one clear skip instead of pytest's "got empty parameter set"
            skip = pytest.mark.skip(reason="invariants: the tier declares none, or none applies to its cases")
            triples = [pytest.param(None, None, None, id="no-invariant", marks=skip)]
        metafunc.parametrize(("case", "backend", "invariant"), triples)
    if {"case", "device_pair"} <= set(metafunc.fixturenames):
        run = activate(metafunc.config)
        if _not_selected(metafunc, run, ("case", "device_pair")):
            return
        device_pairs = cross_device.pairs(run.backends)
        params = [pytest.param(case, pair, id=f"{pair.id}-{case.id}") for case in run.cases for pair in device_pairs]
        if not params:  # one clear skip instead of pytest's "got empty parameter set"
            skip = pytest.mark.skip(reason="cross-device: no backend is selected on both the CPU and a GPU here")
            params = [pytest.param(None, None, id="no-device-pair", marks=skip)]
        metafunc.parametrize(("case", "device_pair"), params)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the placeholders of test functions whose quantity `--quantity` leaves out."""
    dropped = [
        item
        for item in items
        if getattr(getattr(item, "callspec", None), "id", None) == NOT_SELECTED and _is_conformance_module(item.path)
    ]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item not in dropped]


@pytest.fixture
def conformance_run(request: pytest.FixtureRequest) -> ConformanceRun:
    return request.config.stash[RUN_KEY]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if session.config.stash.get(PLAN_KEY, False):
        session.exitstatus = pytest.ExitCode.OK  # a printed plan is a success, not "no tests collected"
        return
    run = session.config.stash.get(RUN_KEY, None)
    if run is None:
        return
    run.writer.close()
    if run.worker != "main":
        return
    workers = {
        p.name.split(".")[-2]
        for p in run.results_path.parent.glob(f"{run.results_path.stem}.gw*{run.results_path.suffix}")
    }
    merge_worker_files(run.results_path, workers)
    if session.config.option.explain:
        _explain(session.config, run)
    records = list(read_records(run.results_path))
    case_dicts: dict[str, dict[str, Any]] = {}
    counts: Counter[str] = Counter()
    results = []
    for record in records:
        if record["kind"] == RESULT:
            counts[record["verdict"]] += 1
            if accounting.counts_for(record, run.shape):
                results.append(accounting.slim(record, case_dicts))
    loop_s = None  # collection to the last check, less building: only a serial run measures it
    if run.collecting_since is not None and not workers:
        loop_s = time.perf_counter() - run.collecting_since - run.prepare_s
    with contextlib.suppress(OSError):  # a read-only cache costs the next plan's estimates, never the run
        estimate.record_results(records, loop_s=loop_s)  # timings for the next `--plan`
    run.verdicts = counts
    run.accounts = planning.account(run.tests, run.backends, results, run.shape, run.space)
    if any(a.fails for a in run.accounts) and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = exitstatus = pytest.ExitCode.TESTS_FAILED  # a green run must have checked something
    end = ResultsWriter(run.results_path, run.writer.run_id)
    for found in run.accounts:
        end.write(found.as_record(run.shape))
    end.write(
        {
            "kind": END,
            "exitstatus": int(exitstatus),
            "counts": dict(counts),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
    )
    end.close()
    if not session.config.option.no_report:
        session.config.stash[REPORT_KEY] = _render_report(session.config, run.results_path)


def _explain(config: pytest.Config, run: ConformanceRun) -> None:
    """`--explain`: probe the one-field neighbours of each backend's failing cases; one `probe` record each."""
    failing: dict[str, list[Case]] = {}
    for record in read_records(run.results_path):
        forward = record.get("quantity", FORWARD) == FORWARD  # the probe reruns the forward check
        if record["kind"] == RESULT and record["verdict"] == Verdict.FAIL.value and forward:
            failing.setdefault(record["backend"], []).append(Case.from_dict(record["case"]))
    opt = config.option
    dimensions = matrix.load(Path(opt.matrix) if opt.matrix else matrix.DEFAULT_MATRIX)["dimensions"]
    writer = ResultsWriter(run.results_path, run.writer.run_id)
    for backend in run.backends:
        if backend.name not in failing:
            continue
        found = probe(
            backend.name,
            failing[backend.name],
            dimensions,
            lambda case, b=backend: check(b, case, run.reference, run.registry, run.precision),  # type: ignore[misc]
            config.option.explain_budget,
        )
        run.probes[backend.name] = found.describe()
        writer.write({"kind": PROBE, **found.as_dict()})
    writer.close()


def _render_report(config: pytest.Config, results: Path) -> str:
    """Render the HTML report; a rendering problem is reported, never turned into a failed run."""
    try:
        from reports.render import render

        report = _output_path(config, config.option.report)
        registry = Path(config.option.divergences) if config.option.divergences else None
        done = render([results], report, registry=registry)
    except Exception as error:
        return f"not rendered ({type(error).__name__}: {error})"
    return f"{done.report} ({done.size // 1024} KiB; summary {done.summary})"


COLUMNS = (
    Verdict.PASS,
    Verdict.FAIL,
    Verdict.ERROR,
    Verdict.UNEXPECTED_PASS,
    Verdict.UNEXPECTED_SUPPORT,
    Verdict.CONVENTION,
    Verdict.KNOWN_DIVERGENCE,
    Verdict.UNSUPPORTED,
    Verdict.SKIPPED,
)
HEADINGS = ("pass", "fail", "error", "unexp", "xsupp", "conv", "known", "unsup", "skip")


def summary_table(
    summaries: list[BackendSummary],
    accounts: list[accounting.Account] | None = None,
    probes: dict[str, str] | None = None,
    quantity: str = FORWARD,
) -> list[str]:
    """One row per backend and quantity (`torch[cpu] (backward)`): tests, checked, its own pair coverage (on the
    rows of the `quantity` the accounts count), verdict counts; under a row that fails or checked nothing, or
    a backend that covers less than its space, why."""
    if not summaries:
        return []
    probes = probes or {}
    found = {a.backend: a for a in accounts or []}
    width = max(len(s.label) for s in summaries)
    pairs = {s.backend: found[s.backend].coverage for s in summaries if s.backend in found}
    pair_width = max([5, *(len(c.fraction()) for c in pairs.values() if c is not None)])
    head = f"{'backend':<{width}}  {'tests':>5} {'checked':>7} {'pairs':>{pair_width}}  "
    lines = [head + " ".join(f"{h:>5}" for h in HEADINGS)]
    for s in summaries:
        account = found.get(s.backend) if s.quantity == quantity else None
        checked = account.checked if account else s.ran
        coverage = pairs.get(s.backend) if account else None
        fraction = coverage.fraction() if coverage is not None else "-"
        row = f"{s.label:<{width}}  {s.total:>5} {checked:>7} {fraction:>{pair_width}}  "
        lines.append(
            row
            + " ".join(f"{s.counts[v.value] or '.':>{max(5, len(h))}}" for v, h in zip(COLUMNS, HEADINGS, strict=True))
        )
        if s.failing or s.ran == 0:
            lines.append(f"  {s.line()}")
        if s.backend in probes and s.quantity == FORWARD:
            lines.append(f"  {probes[s.backend]}")
        if s.invariant_line():
            lines.append(f"  {s.invariant_line()}")
        if account is not None and account.message:
            lines.append(f"  {'FAILS THE RUN: ' if account.fails else ''}{account.message}")
    return lines


def plan_lines(plan: planning.Plan, tier: str) -> list[str]:
    """The tier's size per backend, before the run: shared cases, extras for its own coverage, probes."""
    if not plan.backends:
        return []
    width = max(len(name) for name in plan.backends)
    own = "; each backend adds the cases that cover its own space" if plan.covering else ""
    lines = [f"GRU conformance plan ({tier}): {len(plan.cases)} shared case(s), {len(plan.items)} tests{own}"]
    lines += [f"  {name:<{width}}  {b.tests:>4} tests: {b.line()}" for name, b in plan.backends.items()]
    return lines


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    run = config.stash.get(RUN_KEY, None)
    if run is None or run.worker != "main":
        return
    terminalreporter.section("GRU conformance")
    summaries = summarize(read_records(run.results_path)) if run.results_path.exists() else []
    for line in summary_table(summaries, run.accounts, run.probes, run.shape.quantity):
        terminalreporter.write_line(line)
    for warning in run.warnings:
        terminalreporter.write_line(f"warning: {warning}", yellow=True)
    counts = ", ".join(f"{n} {v}" for v, n in sorted(run.verdicts.items())) or "no results"
    terminalreporter.write_line(f"verdicts: {counts}")
    failing = [a for a in run.accounts if a.fails]
    if failing:
        terminalreporter.write_line(
            f"the run fails: {len(failing)} backend(s) checked nothing ({', '.join(a.backend for a in failing)})",
            red=True,
            bold=True,
        )
    terminalreporter.write_line(f"results: {run.results_path}")
    if REPORT_KEY in config.stash:
        terminalreporter.write_line(f"report: {config.stash[REPORT_KEY]}")
    if terminalreporter.reportchars.replace("w", "") == "fE" and (run.verdicts.keys() - {"pass", "fail", "error"}):
        terminalreporter.write_line("reasons for xfailed and skipped checks: in the report (or rerun with -ra)")
