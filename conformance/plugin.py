"""The pytest side: options, parametrization over (case, backend), result recording.

Registered by the `pytest11` entry point (pyproject.toml) under its module name, so wherever the
package is installed `pytest --pyargs conformance` (or `pytest conformance` in a checkout) has the
options. Options are all it adds to other test suites: the run (backend selection, the matrix, the
results file, the report) starts only when the command line names this package or a file in it
(`activate`), or, failing that, when pytest collects one of its test modules. Under pytest-xdist
each worker appends to its own results file; the controller merges them when the session ends.
"""

from __future__ import annotations

import importlib.util
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conformance import accounting, cross_device, divergences, matrix, selection, sharding
from conformance import plan as planning
from conformance.backend_summary import BackendSummary, summarize
from conformance.case import Case, CaseError
from conformance.contract import Backend, Preparing
from conformance.coverage import Space
from conformance.engine import ORACLE, check
from conformance.environment import environment
from conformance.pipeline import Reference
from conformance.records import (
    BACKEND,
    END,
    RESULT,
    CrossDeviceResult,
    Result,
    ResultsWriter,
    merge_worker_files,
    read_records,
    worker_path,
)
from conformance.vectors import VectorsError, VectorsReference, check_integrity
from conformance.verdict import Verdict

DEFAULT_RESULTS = Path("reports/out/results.jsonl")
DEFAULT_REPORT = Path("reports/out/report.html")
PACKAGE_DIR = Path(__file__).resolve().parent  # holds the conformance test modules
RUN_KEY = pytest.StashKey["ConformanceRun"]()
REPORT_KEY = pytest.StashKey[str]()  # where the report went, for the terminal summary


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
    space: Callable[[], Space] | None = None  # the matrix's space, built on demand (`conformance.plan.space`)

    def prepare(self, items: list[pytest.Item]) -> None:
        """Let backends that build models up front (ONNX exports) build all they will need at once, in parallel.

        Cases a backend refuses statically are left out (nothing to build), except the probes."""
        wanted: dict[str, list[Case]] = {}
        for item in items:
            params = getattr(item, "callspec", None)
            if params is not None and {"case", "backend"} <= set(params.params):
                backend, case = params.params["backend"], params.params["case"]
                if backend.supports(case) is None or self.tests.probe(backend.name, case.id) is not None:
                    wanted.setdefault(backend.name, []).append(case)
        for backend in self.backends:
            if isinstance(backend, Preparing) and wanted.get(backend.name) and backend.availability().available:
                backend.prepare(wanted[backend.name])

    def check(self, backend: Backend, case: Case) -> Result:
        if backend.name not in self.described:
            self.described.add(backend.name)
            notes: dict[str, Any] = {}
            availability = backend.availability()
            if availability.available:
                try:
                    notes = backend.describe()
                except Exception as error:  # notes are informative; never fail a run over them
                    notes = {"describe_error": f"{type(error).__name__}: {error}"}
            self.writer.write(
                {
                    "kind": BACKEND,
                    "backend": backend.name,
                    "family": backend.family,
                    "device": backend.device,
                    "available": availability.available,
                    "availability": availability.describe(),
                    "notes": notes,
                }
            )
        probe = self.tests.probe(backend.name, case.id)
        result = check(backend, case, self.reference, self.registry, self.precision, self.rerun_args, probe)
        self.writer.write(result.as_record())
        self.verdicts[result.verdict.value] += 1
        return result

    def check_devices(self, pair: cross_device.DevicePair, case: Case) -> CrossDeviceResult:
        """The cross-device check of one case, recorded as a `cross_device` record."""
        result = cross_device.check(pair, case, self.precision, lambda c: self.reference.load(c)[:2])
        self.writer.write(result.as_record())
        return result


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
        "--case", action="append", default=None, metavar="CASE_ID", help="run exactly this case id (overrides --tier)"
    )
    group.addoption("--device", default="all", help="cpu, cuda or all (default: all devices detected here)")
    group.addoption("--seed", type=int, default=0, help="data seed for every case (default: 0)")
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
        "--vectors",
        default=None,
        metavar="DIR",
        help="take cases and expected values from stored vectors (e.g. fixtures/vectors/pairwise) instead of "
        "the live oracle; --case selects among them, --tier/--seed/--matrix are ignored",
    )


def _worker_id(config: pytest.Config) -> str:
    workerinput = getattr(config, "workerinput", None)
    return workerinput["workerid"] if workerinput else "main"


def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [token.strip() for value in values for token in value.split(",") if token.strip()]


def _build_run(config: pytest.Config) -> ConformanceRun:
    opt = config.option
    if opt.precision not in ("strict", "default"):
        raise pytest.UsageError(f"--precision: unknown mode {opt.precision!r}; valid: strict, default")
    if opt.tier not in matrix.TIERS:
        raise pytest.UsageError(f"--tier: unknown tier {opt.tier!r}; valid tiers: {', '.join(matrix.TIERS)}")
    reference: Reference = ORACLE
    matrix_path = Path(opt.matrix) if opt.matrix else matrix.DEFAULT_MATRIX
    try:
        if opt.vectors:
            cases, reference = _vectors_cases(opt.vectors, opt.case)
        elif opt.case:
            cases = [Case.from_id(case_id) for case_id in opt.case]
        else:
            cases = matrix.cases(opt.tier, opt.seed, matrix_path)
        shard = sharding.parse(opt.shard) if opt.shard else None
        backends = selection.select(_split(opt.backends), opt.device, opt.backend_module, opt.precision)
        tier = "vectors" if opt.vectors else "case" if opt.case else opt.tier
        strength = planning.STRENGTH.get(tier)
        space = planning.space(matrix.load(matrix_path), opt.seed, strength) if strength else None
        plan = planning.build(cases, backends, space).shard(shard)
        cases = plan.cases
        registry = divergences.load(Path(opt.divergences) if opt.divergences else divergences.DEFAULT_REGISTRY)
    except (
        CaseError,
        matrix.MatrixError,
        selection.SelectionError,
        divergences.RegistryError,
        sharding.ShardError,
    ) as error:
        raise pytest.UsageError(str(error)) from None

    worker = _worker_id(config)
    results_path = _output_path(config, opt.results)
    workerinput = getattr(config, "workerinput", None)
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
        writer.write(
            environment(
                {
                    "tier": tier,
                    "cases": len(cases),
                    "tests": len(plan.items),
                    "plan": {name: b.as_dict() for name, b in plan.backends.items()},
                    "seed": opt.seed,
                    "device": opt.device,
                    "precision": opt.precision,
                    "backends": [b.name for b in backends],
                    "matrix": str(opt.matrix or matrix.DEFAULT_MATRIX),
                    "shard": opt.shard,
                    "vectors": opt.vectors,
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
        accounting.RunShape(tier, strength is not None, opt.shard, strength or 2, plan.dimensions, named),
        reference=reference,
        rerun_args=_rerun_args(opt),
        space=lambda: planning.space(matrix.load(matrix_path), opt.seed),
    )


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
    if outcome == "xfailed":
        pytest.xfail(f"{verdict.value}: {message}")
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
    return cases, Reference(root, stored, ("--vectors", root))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Print the plan; outside xdist, build models up front (under xdist each worker builds lazily, no duplicate
    exports)."""
    run = session.config.stash.get(RUN_KEY, None)
    if run is None or run.worker != "main":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and reporter.verbosity >= 0 and not run.plan_shown:  # activated by collection
        run.plan_shown = True
        for line in plan_lines(run.tests, run.shape.tier):
            reporter.write_line(line)
    if session.items:
        run.prepare(session.items)


def pytest_report_header(config: pytest.Config) -> list[str]:
    """The plan (the tier's size per backend) under pytest's header, when the command line started the run."""
    run = config.stash.get(RUN_KEY, None)
    if run is None or run.worker != "main":
        return []
    run.plan_shown = True
    return plan_lines(run.tests, run.shape.tier)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "conformance: a GRU conformance check")
    if _names_this_suite(config) and not config.option.help:
        activate(config)  # before collection, so a bad option is a usage error and xdist workers get the run id
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(config), "conformance-xdist")


def activate(config: pytest.Config) -> ConformanceRun:
    """The run of this process, built on first use: select backends, load the matrix, open the results file."""
    run = config.stash.get(RUN_KEY, None)
    if run is None:
        run = config.stash[RUN_KEY] = _build_run(config)
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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if not _is_conformance_module(metafunc.definition.path):
        return  # another suite's `case` and `backend` are its own business
    if {"case", "backend"} <= set(metafunc.fixturenames):
        run = activate(metafunc.config)
        items = run.tests.items
        metafunc.parametrize(("case", "backend"), [(p.case, p.backend) for p in items], ids=[p.id for p in items])
    if {"case", "device_pair"} <= set(metafunc.fixturenames):
        run = activate(metafunc.config)
        device_pairs = cross_device.pairs(run.backends)
        params = [pytest.param(case, pair, id=f"{pair.id}-{case.id}") for case in run.cases for pair in device_pairs]
        if not params:  # one clear skip instead of pytest's "got empty parameter set"
            skip = pytest.mark.skip(reason="cross-device: no backend is selected on both the CPU and a GPU here")
            params = [pytest.param(None, None, id="no-device-pair", marks=skip)]
        metafunc.parametrize(("case", "device_pair"), params)


@pytest.fixture
def conformance_run(request: pytest.FixtureRequest) -> ConformanceRun:
    return request.config.stash[RUN_KEY]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
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
    case_dicts: dict[str, dict[str, Any]] = {}
    results = [accounting.slim(r, case_dicts) for r in read_records(run.results_path) if r["kind"] == RESULT]
    counts = Counter(r["verdict"] for r in results)
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


def summary_table(summaries: list[BackendSummary], accounts: list[accounting.Account] | None = None) -> list[str]:
    """One row per backend: tests, checked, its own pair coverage, verdict counts; under a backend that fails,
    checked nothing or covers less than its space, why."""
    if not summaries:
        return []
    found = {a.backend: a for a in accounts or []}
    width = max(len(s.backend) for s in summaries)
    pairs = {s.backend: found[s.backend].coverage for s in summaries if s.backend in found}
    pair_width = max([5, *(len(c.fraction()) for c in pairs.values() if c is not None)])
    head = f"{'backend':<{width}}  {'tests':>5} {'checked':>7} {'pairs':>{pair_width}}  "
    lines = [head + " ".join(f"{h:>5}" for h in HEADINGS)]
    for s in summaries:
        account = found.get(s.backend)
        checked = account.checked if account else s.ran
        coverage = pairs.get(s.backend)
        fraction = coverage.fraction() if coverage is not None else "-"
        row = f"{s.backend:<{width}}  {s.total:>5} {checked:>7} {fraction:>{pair_width}}  "
        lines.append(
            row
            + " ".join(f"{s.counts[v.value] or '.':>{max(5, len(h))}}" for v, h in zip(COLUMNS, HEADINGS, strict=True))
        )
        if s.failing or s.ran == 0:
            lines.append(f"  {s.line()}")
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
    for line in summary_table(summaries, run.accounts):
        terminalreporter.write_line(line)
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
