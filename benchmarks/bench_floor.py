"""How close a warm run is to its floor: wall time / (library imports + time inside backend arithmetic).

    python benchmarks/bench_floor.py [--tier pairwise] [--backends ...] [--quantity both] [--no-warm-up]

The floor is what no suite can avoid: importing the libraries under test, and the
arithmetic of every backend call the run makes once its program or session exists. Measured in
one run of this script, each part in its own fresh process, on the same cache:

1. warm-up: `pytest conformance` once, so every export and program is cached (skip with
   --no-warm-up when the cache is known warm);
2. wall: `pytest conformance` again, as a user runs it (collection, checks, report);
3. imports: a fresh process that selects the same backends and asks each whether it is
   available, which imports its libraries (in its worker, for a backend that runs in one)
   and nothing else, timed from start to exit, less the same process importing no library;
4. arithmetic: the same `pytest conformance` run in a fresh process, with every backend's `run`
   and `run_backward` made to compute each call twice: the floor counts the second call, when the
   program is loaded, compiled and warm. So the floor covers exactly the work of the wall run:
   forward and backward checks, the invariants' runs, each backend's extras and probes.

The ratio is wall / (imports + arithmetic); the issue's target is at most 2.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def imports(backends: str | None) -> dict[str, float]:
    """In this (fresh) process: select the backends and import their libraries (the parent times the process)."""
    from conformance import selection

    chosen = selection.select(backends.split(",") if backends else None, "cpu", [], "strict")
    for backend in chosen:
        backend.availability()
    return {}


def nothing(backends: str | None) -> dict[str, float]:
    """In this (fresh) process: what `imports` does, less the libraries: the baseline it is compared with."""
    from conformance import selection  # noqa: F401

    return {}


class _SecondCalls:
    """A pytest plugin: each backend call is made twice and the second is timed, per backend."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def pytest_collection_finish(self, session: Any) -> None:
        from conformance.plugin import RUN_KEY

        run = session.config.stash.get(RUN_KEY, None)
        for backend in run.backends if run is not None else []:
            for method in ("run", "run_backward"):
                if hasattr(backend, method):
                    setattr(backend, method, self._twice(backend.name, getattr(backend, method)))

    def _twice(self, name: str, call: Any) -> Any:
        def timed(*args: Any) -> Any:
            call(*args)  # loads, compiles, warms up (or refuses: then so does the second call)
            started = time.perf_counter()
            try:
                return call(*args)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
                self.calls[name] = self.calls.get(name, 0) + 1

        return timed


def arithmetic(args: argparse.Namespace) -> dict[str, float]:
    """In this (fresh) process: the run itself, each backend call's second computation timed, per backend."""
    import contextlib
    import io

    import pytest

    timer = _SecondCalls()
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        pytest.main(_suite_args(args, Path(tmp) / "results.jsonl"), plugins=[timer])
    return timer.seconds


def _suite_args(args: argparse.Namespace, results: Path) -> list[str]:
    command = ["conformance", "-q", "-p", "no:cacheprovider", "--device", "cpu", "--tier", args.tier]
    command += ["--quantity", args.quantity, "--results", str(results), "--report", str(results.with_suffix(".html"))]
    return command + (["--backends", args.backends] if args.backends else [])


def _child(what: str, args: argparse.Namespace) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", what, "--tier", args.tier, "--quantity", args.quantity]
    command += ["--backends", args.backends] if args.backends else []
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{what} process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _timed_child(what: str, args: argparse.Namespace) -> float:
    started = time.perf_counter()
    _child(what, args)
    return time.perf_counter() - started


def _suite(args: argparse.Namespace, results: Path) -> float:
    command = [sys.executable, "-m", "pytest", *_suite_args(args, results)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(f"pytest conformance exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    return wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tier", default="pairwise")
    parser.add_argument("--backends", default=None, help="as for pytest conformance (default: every CPU backend)")
    parser.add_argument("--quantity", default="both", help="as for pytest conformance: forward, backward or both")
    parser.add_argument("--no-warm-up", action="store_true", help="the cache is warm already: skip the first run")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child = {"imports": imports, "nothing": nothing}.get(args.child)
        print(json.dumps(child(args.backends) if child else arithmetic(args)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results.jsonl"
        if not args.no_warm_up:
            cold = _suite(args, results)
            print(f"warm-up run (fills the caches if they were cold): {cold:.1f} s")
        wall = _suite(args, results)
        from conformance.records import read_records

        inside = sum(r["timing"].get("backend_s", 0.0) for r in read_records(results) if r["kind"] == "result")
    imported = min(_timed_child("imports", args) for _ in range(2)) - min(
        _timed_child("nothing", args) for _ in range(2)
    )
    per_backend = _child("arithmetic", args)
    floor = imported + sum(per_backend.values())
    print(
        f"tier {args.tier}, CPU backends: {len(per_backend)}; cache {os.environ.get('GRU_CONFORMANCE_CACHE', '.cache')}"
    )
    print(f"warm run wall (pytest conformance, report included): {wall:.2f} s; inside backend calls {inside:.2f} s")
    print(
        f"floor: library imports {imported:.2f} s + backend arithmetic {sum(per_backend.values()):.2f} s = {floor:.2f} s"
    )
    for name, seconds in sorted(per_backend.items()):
        print(f"  {name:32} {seconds:8.3f} s")
    ratio = wall / floor
    print(f"warm/floor ratio: {ratio:.2f} (target <= 2)")
    return 0 if ratio <= 2 else 1


if __name__ == "__main__":
    raise SystemExit(main())
