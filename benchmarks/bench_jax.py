"""Compile count, compile time and steady-state run time of each JAX backend over a tier.

Each backend runs in its own process (fresh jit caches, clean compile log), twice, against
one persistent-cache directory (a fresh temporary one unless --cache is given):

* run 1 (cold cache): XLA compiles of our programs must equal the tier's distinct
  signatures (structure, batch, seq_len) among the cases the backend supports;
* run 2 (new process, warm cache): zero XLA compiles, everything a persistent-cache hit.

Steady-state time is a second pass over the tier inside run 1, when every program is
compiled: the median per case and the total. Compiles are counted from jax.monitoring's
`/jax/core/compile/backend_compile_duration` events (with `fun_name`), a request being a
real XLA compile unless `/jax/compilation_cache/cache_hits` fired inside it (see
`backends.jax_common.CompileLog`). "setup" compiles are the libraries' own eager ops
(e.g. Keras staging its variables at build), reported apart from our programs.

    .venv/bin/python benchmarks/bench_jax.py [--tier pairwise] [--backends flax-linen,equinox] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FAMILIES = {
    "flax-linen": "backends.flax_linen:FlaxLinenGru",
    "flax-nnx": "backends.flax_nnx:FlaxNnxGru",
    "equinox": "backends.equinox_gru:EquinoxGru",
    "keras-jax": "backends.keras_jax:KerasJaxGru",
}


def worker(family: str, tier: str) -> dict:
    """One process: run the tier once cold (counting compiles), then again for steady-state time."""
    import importlib

    from backends.jax_common import COMPILES, configure_jax, summarize
    from conformance.data import case_data
    from conformance.matrix import cases

    module, cls = FAMILIES[family].split(":")
    backend = getattr(importlib.import_module(module), cls)()
    configure_jax()
    supported = [c for c in cases(tier) if backend.supports(c) is None]
    signatures = {(c.structure, c.batch, c.seq_len) for c in supported}
    mark = COMPILES.mark()
    started = time.perf_counter()
    for case in supported:
        backend.run(case, *case_data(case))
    first_pass = time.perf_counter() - started
    compiles = summarize(COMPILES.since(mark))
    mark = COMPILES.mark()
    per_case = []
    for case in supported:
        weights, inputs = case_data(case)
        t0 = time.perf_counter()
        backend.run(case, weights, inputs)
        per_case.append(time.perf_counter() - t0)
    steady_compiles = summarize(COMPILES.since(mark))
    return {
        "backend": backend.name,
        "cases": len(supported),
        "unsupported": len(cases(tier)) - len(supported),
        "signatures": len(signatures),
        **compiles,
        "first_pass_s": first_pass,
        "steady_total_s": sum(per_case),
        "steady_median_ms": 1000 * statistics.median(per_case) if per_case else 0.0,
        "steady_pass_compiles": steady_compiles["program_compiles"] + steady_compiles["program_cache_hits"],
    }


def spawn(family: str, tier: str, cache: str) -> dict:
    env = {**os.environ, "GRU_CONFORMANCE_CACHE": cache}
    done = subprocess.run(
        [sys.executable, __file__, "--worker", family, "--tier", tier],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{family} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tier", default="pairwise")
    parser.add_argument("--backends", default=",".join(FAMILIES))
    parser.add_argument("--cache", default=None, help="persistent cache root (default: a fresh temporary directory)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.tier)))
        return
    cache = args.cache or tempfile.mkdtemp(prefix="gru-jax-cache-")
    print(f"tier {args.tier}; persistent cache root {cache}")
    header = (
        f"{'backend':18} {'cases':>5} {'sigs':>4} | {'run1 XLA':>8} {'compile s':>9} {'setup':>5} | "
        f"{'steady med ms':>13} {'steady tot s':>12} {'recomp':>6} | {'run2 XLA':>8} {'hits':>4} {'setup':>5}"
    )
    print(header)
    print("-" * len(header))
    failures = []
    for family in args.backends.split(","):
        cold, warm = spawn(family, args.tier, cache), spawn(family, args.tier, cache)
        print(
            f"{cold['backend']:18} {cold['cases']:>5} {cold['signatures']:>4} | {cold['program_compiles']:>8} "
            f"{cold['program_compile_s']:>9.2f} {cold['setup_compiles']:>5} | {cold['steady_median_ms']:>13.2f} "
            f"{cold['steady_total_s']:>12.3f} {cold['steady_pass_compiles']:>6} | {warm['program_compiles']:>8} "
            f"{warm['program_cache_hits']:>4} {warm['setup_compiles']:>5}"
        )
        if cold["program_compiles"] + cold["program_cache_hits"] != cold["signatures"]:
            failures.append(
                f"{family}: {cold['program_compiles']} compile requests for {cold['signatures']} signatures"
            )
        if warm["program_compiles"] or warm["setup_compiles"]:
            failures.append(
                f"{family}: second run compiled {warm['program_compiles']} + {warm['setup_compiles']} (setup)"
            )
        if cold["steady_pass_compiles"]:
            failures.append(f"{family}: the steady-state pass recompiled")
    print(
        "\nrun1 = cold cache (XLA compiles of our jitted programs; setup = libraries' own eager ops), "
        "run2 = new process on the same cache; recomp = compiles during the steady pass."
    )
    for line in failures:
        print("FAIL:", line)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
