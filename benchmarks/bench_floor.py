"""How close a warm run is to its floor: wall time / (library imports + time inside backend arithmetic).

    python benchmarks/bench_floor.py [--tier pairwise] [--backends ...] [--no-warm-up]

The floor is what no suite can avoid: importing the libraries under test, and the
arithmetic of every (backend, case) once its program or session exists. Measured in one
run of this script, each part in its own fresh process, on the same cache:

1. warm-up: `pytest conformance` once, so every export and program is cached (skip with
   --no-warm-up when the cache is known warm);
2. wall: `pytest conformance` again, as a user runs it (collection, checks, report);
3. imports: a fresh process that selects the same backends and asks each whether it is
   available, which imports its libraries and nothing else, timed from start to exit (a
   library's teardown at exit is part of having imported it), less the same process
   importing no library;
4. arithmetic: a fresh process that runs every (backend, case) twice and times the second
   call, when the program is loaded, compiled and warm.

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


def arithmetic(tier: str, backends: str | None) -> dict[str, float]:
    """In this (fresh) process: per backend, the summed time of each case's second call."""
    from conformance import matrix, selection
    from conformance.data import case_data
    from conformance.pipeline import attempt

    chosen = selection.select(backends.split(",") if backends else None, "cpu", [], "strict")
    timing: dict[str, float] = {}
    for backend in chosen:
        if not backend.availability().available:
            continue
        total = 0.0
        for case in matrix.cases(tier):
            weights, inputs = case_data(case)
            if attempt(backend, case, weights, inputs).ran:  # the first call loads, compiles, warms up
                started = time.perf_counter()
                backend.run(case, weights, inputs)
                total += time.perf_counter() - started
        timing[backend.name] = total
    return timing


def _child(what: str, args: argparse.Namespace) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", what, "--tier", args.tier]
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
    command = [sys.executable, "-m", "pytest", "conformance", "-q", "-p", "no:cacheprovider", "--device", "cpu"]
    command += ["--tier", args.tier, "--results", str(results), "--report", str(results.with_suffix(".html"))]
    command += ["--backends", args.backends] if args.backends else []
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
    parser.add_argument("--no-warm-up", action="store_true", help="the cache is warm already: skip the first run")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child = {"imports": imports, "nothing": nothing}.get(args.child)
        print(json.dumps(child(args.backends) if child else arithmetic(args.tier, args.backends)))
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
