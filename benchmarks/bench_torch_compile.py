"""What `torch.compile(nn.GRU)` costs per case: the first compile (cold inductor cache), the warm one, and a run.

Two processes over one inductor cache directory (a fresh temporary one unless --cache is
given), so dynamo's in-memory caches start empty each time:

* run 1 (cold cache): every case's first call = dynamo tracing + inductor's C++ codegen and
  compilation + the run; the graphs compiled and the cells they unrolled;
* run 2 (new process, warm cache): the same first call, now served by inductor's FX graph
  and AOTAutograd caches;
* steady state: a second call of each case inside run 2, every graph compiled.

Only cases the column runs (dense, within the cell budget) are timed; packed cases fall
back to eager in milliseconds and over-budget cases are not run (`backends.torch_compiled`).

    .venv/bin/python benchmarks/bench_torch_compile.py [--tier pairwise] [--cache DIR] [--max-cells N]
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def worker(tier: str) -> dict:
    """One process: each supported case's first call, then a second call (steady state)."""
    from backends.torch_compiled import CompiledTorchGru, cells
    from conformance.data import case_data
    from conformance.matrix import cases

    backend = CompiledTorchGru()
    rows = []
    for case in cases(tier):
        if case.packed or backend.supports(case) is not None:
            continue
        weights, inputs = case_data(case)
        graphs = len(backend.log.graphs)
        started = time.perf_counter()
        backend.run(case, weights, inputs)
        first = time.perf_counter() - started
        started = time.perf_counter()
        backend.run(case, weights, inputs)
        again = time.perf_counter() - started
        inductor = sum(g.compile_s for g in backend.log.graphs[graphs:])
        rows.append(
            {
                "case": case.id,
                "cells": cells(case),
                "graphs": len(backend.log.graphs) - graphs,
                "first_s": first,
                "inductor_s": inductor,
                "steady_s": again,
            }
        )
    return {"rows": rows}


def run_worker(tier: str, cache: Path, max_cells: str | None) -> dict:
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(cache))
    if max_cells:
        env["GRU_CONFORMANCE_COMPILE_MAX_CELLS"] = max_cells
    code = f"import json, sys; sys.path.insert(0, {str(REPO)!r}); from benchmarks.bench_torch_compile import worker; print(json.dumps(worker({tier!r})))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tier", default="pairwise")
    parser.add_argument("--cache", type=Path, default=None, help="inductor cache directory (default: a fresh one)")
    parser.add_argument("--max-cells", default=None, help="override the per-case cell budget")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as fresh:
        cache = args.cache or Path(fresh)
        started = time.perf_counter()
        cold = run_worker(args.tier, cache, args.max_cells)
        cold_s = time.perf_counter() - started
        started = time.perf_counter()
        warm = run_worker(args.tier, cache, args.max_cells)
        warm_s = time.perf_counter() - started
    print(f"torch.compile, {args.tier} tier, cache {cache}")
    print(f"{'case':60} {'cells':>5} {'graphs':>6} {'cold s':>8} {'inductor':>8} {'warm s':>8} {'run ms':>8}")
    for c, w in zip(cold["rows"], warm["rows"], strict=True):
        print(
            f"{c['case']:60} {c['cells']:5} {c['graphs']:6} {c['first_s']:8.1f} {c['inductor_s']:8.1f} "
            f"{w['first_s']:8.1f} {1000 * w['steady_s']:8.2f}"
        )
    print(f"process wall time (imports and warm-up included): cold {cold_s:.0f} s, warm {warm_s:.0f} s")


if __name__ == "__main__":
    main()
