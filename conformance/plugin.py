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
import os
import shlex
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conformance import cross_device, divergences, estimate, matrix, progress, selection, sharding
from conformance.backend_summary import BackendSummary, summarize
from conformance.case import Case, CaseError
from conformance.contract import Backend, Preparing
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
PLAN_KEY = pytest.StashKey[bool]()  # `--plan`: print the plan, run nothing


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
    described: set[str] = field(default_factory=set)
    verdicts: Counter[str] = field(default_factory=Counter)
    reference: Reference = ORACLE  # or stored vectors (--vectors)
    rerun_args: tuple[str, ...] = ()  # options a rerun command needs besides backend, case and reference
    collecting_since: float | None = None  # when collection began (the plan's per-check overhead)
    prepare_s: float = 0.0  # building ahead (exports, programs): timed apart from the checks

    def prepare(self, items: list[pytest.Item], reporter: progress.Reporter | None = None) -> None:
        """Let backends that build models up front (ONNX exports, JAX programs) build all they will need at once,
        reporting progress (what, i of n, elapsed) to `reporter`."""
        wanted: dict[str, list[Case]] = {}
        for item in items:
            params = getattr(item, "callspec", None)
            if params is not None and {"case", "backend"} <= set(params.params):
                wanted.setdefault(params.params["backend"].name, []).append(params.params["case"])
        started = time.perf_counter()
        with progress.reporting(reporter):
            for backend in self.backends:
                if isinstance(backend, Preparing) and wanted.get(backend.name) and backend.availability().available:
                    # A failing build is recorded by the cases that need it (each builds on demand).
                    with contextlib.suppress(Exception):
                        backend.prepare(wanted[backend.name])
        self.prepare_s += time.perf_counter() - started

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
        result = check(backend, case, self.reference, self.registry, self.precision, self.rerun_args)
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
        "--plan",
        action="store_true",
        help="print what the run would do and stop: cases, results, exports and compiles (how many cached), "
        "and an estimated time from the timings the caches recorded",
    )
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


def _selection(
    config: pytest.Config,
) -> tuple[list[Case], Reference, list[Backend], list[divergences.Divergence]]:
    """The cases (tier, shard), their reference, the backends and the registry the options select."""
    opt = config.option
    if opt.precision not in ("strict", "default"):
        raise pytest.UsageError(f"--precision: unknown mode {opt.precision!r}; valid: strict, default")
    if opt.tier not in matrix.TIERS:
        raise pytest.UsageError(f"--tier: unknown tier {opt.tier!r}; valid tiers: {', '.join(matrix.TIERS)}")
    reference: Reference = ORACLE
    try:
        if opt.vectors:
            cases, reference = _vectors_cases(opt.vectors, opt.case)
        elif opt.case:
            cases = [Case.from_id(case_id) for case_id in opt.case]
        else:
            cases = matrix.cases(opt.tier, opt.seed, Path(opt.matrix) if opt.matrix else matrix.DEFAULT_MATRIX)
        cases = sharding.select(cases, sharding.parse(opt.shard) if opt.shard else None)
        backends = selection.select(_split(opt.backends), opt.device, opt.backend_module, opt.precision)
        registry = divergences.load(Path(opt.divergences) if opt.divergences else divergences.DEFAULT_REGISTRY)
    except (
        CaseError,
        matrix.MatrixError,
        selection.SelectionError,
        divergences.RegistryError,
        sharding.ShardError,
    ) as error:
        raise pytest.UsageError(str(error)) from None
    return cases, reference, backends, registry


def _build_run(config: pytest.Config) -> ConformanceRun:
    opt = config.option
    cases, reference, backends, registry = _selection(config)
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
                    "tier": "vectors" if opt.vectors else "case" if opt.case else opt.tier,
                    "cases": len(cases),
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
    return ConformanceRun(
        cases,
        backends,
        registry,
        writer,
        results_path,
        opt.precision,
        worker,
        reference=reference,
        rerun_args=_rerun_args(opt),
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


@pytest.hookimpl(trylast=True)  # after the terminal's `collected N items`
def pytest_collection_finish(session: pytest.Session) -> None:
    """Outside xdist, build models up front; under xdist each worker builds lazily (no duplicate exports)."""
    run = session.config.stash.get(RUN_KEY, None)
    if run is not None and run.worker == "main" and session.items:
        terminal = session.config.pluginmanager.get_plugin("terminalreporter")
        quiet = session.config.option.verbose < -1  # -qq
        _short_summary(session.config)
        run.prepare(session.items, None if terminal is None or quiet else progress.TerminalProgress(terminal))


@pytest.hookimpl(tryfirst=True)
def pytest_collection(session: pytest.Session) -> bool | None:
    """`--plan`: print the plan of the selected run instead of collecting (tens of thousands of items, for full)."""
    config = session.config
    run = config.stash.get(RUN_KEY, None)
    if run is not None:
        run.collecting_since = time.perf_counter()
    if not config.stash.get(PLAN_KEY, False):
        return None
    cases, _, backends, _ = _selection(config)
    opt = config.option
    parts = [f"tier {opt.tier}" if not (opt.case or opt.vectors) else "selected cases"]
    parts += [f"shard {opt.shard}"] if opt.shard else []
    parts += [f"device {opt.device}", f"{len(backends)} backends"]
    made = estimate.make("GRU conformance plan: " + ", ".join(parts), cases, backends)
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
        pairs = [(case, backend) for case in run.cases for backend in run.backends]
        metafunc.parametrize(("case", "backend"), pairs, ids=[f"{b.name}-{c.id}" for c, b in pairs])
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
    records = list(read_records(run.results_path))
    counts = Counter(r["verdict"] for r in records if r["kind"] == RESULT)
    loop_s = None  # collection to the last check, less building: only a serial run measures it
    if run.collecting_since is not None and not workers:
        loop_s = time.perf_counter() - run.collecting_since - run.prepare_s
    with contextlib.suppress(OSError):  # a read-only cache costs the next plan's estimates, never the run
        estimate.record_results(records, loop_s=loop_s)  # timings for the next `--plan`
    run.verdicts = counts
    end = ResultsWriter(run.results_path, run.writer.run_id)
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
    Verdict.CONVENTION,
    Verdict.KNOWN_DIVERGENCE,
    Verdict.UNSUPPORTED,
    Verdict.SKIPPED,
)
HEADINGS = ("pass", "fail", "error", "unexp", "conv", "known", "unsup", "skip")


def summary_table(summaries: list[BackendSummary]) -> list[str]:
    """One row of verdict counts per backend; under a backend that fails or checked nothing, why."""
    if not summaries:
        return []
    width = max(len(s.backend) for s in summaries)
    lines = [f"{'backend':<{width}}  " + " ".join(f"{h:>5}" for h in HEADINGS)]
    for s in summaries:
        lines.append(f"{s.backend:<{width}}  " + " ".join(f"{s.counts[v.value] or '.':>5}" for v in COLUMNS))
        if s.failing or s.ran == 0:
            lines.append(f"  {s.line()}")
    return lines


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    run = config.stash.get(RUN_KEY, None)
    if run is None or run.worker != "main":
        return
    terminalreporter.section("GRU conformance")
    for line in summary_table(summarize(read_records(run.results_path)) if run.results_path.exists() else []):
        terminalreporter.write_line(line)
    counts = ", ".join(f"{n} {v}" for v, n in sorted(run.verdicts.items())) or "no results"
    terminalreporter.write_line(f"verdicts: {counts}")
    terminalreporter.write_line(f"results: {run.results_path}")
    if REPORT_KEY in config.stash:
        terminalreporter.write_line(f"report: {config.stash[REPORT_KEY]}")
    if terminalreporter.reportchars.replace("w", "") == "fE" and (run.verdicts.keys() - {"pass", "fail", "error"}):
        terminalreporter.write_line("reasons for xfailed and skipped checks: in the report (or rerun with -ra)")
