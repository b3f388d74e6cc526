"""What differentiating costs over a tier: backward vs forward time, compiles, and backward verdicts.

Each backend runs in its own process (fresh jit caches, clean compile log), twice, against one
persistent-cache directory (a fresh temporary one unless --cache is given):

* run 1 (cold cache): the backend's forward over the tier (compiles the forward programs), then
  its backward (`run_backward`: one vjp program per signature, named `..._backward`): compile
  counts and first-pass seconds. Then the steady state: each case's forward and backward again,
  the fastest of REPEATS (the shared machine is noisy), summed.
* run 2 (a new process on the warm cache, as a second `pytest conformance` run is): each case's
  forward, then its backward, once: seconds and compiles (there must be none). The backward
  results are judged against the float64 BPTT oracle at the derived tolerance: verdicts and
  worst headroom per dtype.

The reference side (forward: oracle + `derive`; backward: BPTT oracle + `derive_backward`) is
paid once per case in a run whatever the number of backends, so it is timed once, in its own
process (fastest of REPEATS), and added once to the tier totals:

    tier forward  = sum over backends of run-2 forward seconds  + forward reference
    tier backward = sum over backends of run-2 backward seconds + backward reference

Both are printed, with their ratio over the same backends. The claim (issue 11) is that the
backward adds at most the forward *tier's* warm time again: every backend's forward check, the
ONNX columns included, as a second `pytest conformance` run spends it. Give that wall time,
as `benchmarks/run_tier.py` prints it for a warm run, with --forward-tier-s to check the claim.
The script fails on a compile count that breaks the policy (one vjp program per signature,
none in a new process on the warm cache), and on the claim when --forward-tier-s is given.

    .venv/bin/python benchmarks/bench_backward.py [--tier pairwise] [--backends torch,flax-linen] [--cache DIR]
        [--forward-tier-s SECONDS]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FAMILIES = {
    "torch": "backends.torch_eager:TorchGru",
    "flax-linen": "backends.flax_linen:FlaxLinenGru",
    "flax-nnx": "backends.flax_nnx:FlaxNnxGru",
    "equinox": "backends.equinox_gru:EquinoxGru",
    "keras-jax": "backends.keras_jax:KerasJaxGru",
}
REPEATS = 5


def seconds(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def reference_worker(tier: str) -> dict[str, Any]:
    """The reference side of every case, forward and backward, each the fastest of REPEATS."""
    from conformance import engine, oracle_backward, tolerance, tolerance_backward
    from conformance.matrix import cases

    def forward(case: Any) -> None:
        engine.oracle_reference(case)
        tolerance.derive(case)

    def backward(case: Any) -> None:
        oracle_backward.reference_gradients(case)
        tolerance_backward.derive_backward(case)

    def clear() -> None:
        for cached in (
            engine.oracle_reference,
            tolerance.error_gain,
            oracle_backward.reference_gradients,
            tolerance_backward.backward_error_gain,
        ):
            cached.cache_clear()

    totals = {"forward_reference_s": 0.0, "backward_reference_s": 0.0}
    for case in cases(tier):
        for key, fn in (("forward_reference_s", forward), ("backward_reference_s", backward)):
            best = float("inf")
            for _ in range(REPEATS):
                clear()
                best = min(best, seconds(lambda fn=fn, case=case: fn(case)))
            totals[key] += best
    return totals


def worker(family: str, tier: str, run: int) -> dict[str, Any]:
    import importlib

    from conformance.compare_backward import judge_gradients
    from conformance.data import case_data, make_cotangents
    from conformance.matrix import cases
    from conformance.oracle_backward import reference_gradients
    from conformance.tolerance_backward import derive_backward

    module, cls = FAMILIES[family].split(":")
    backend = getattr(importlib.import_module(module), cls)()
    log: Any = None
    if family != "torch":
        from backends.jax_common import COMPILES, configure_jax

        configure_jax()
        log = COMPILES
    tier_cases = cases(tier)
    supported = [c for c in tier_cases if backend.supports(c) is None]
    out: dict[str, Any] = {
        "backend": backend.name,
        "cases": len(supported),
        "signatures": len({(c.structure, c.batch, c.seq_len) for c in supported}),
    }

    def forward(case: Any) -> Callable[[], Any]:
        return lambda: backend.run(case, *case_data(case))

    def backward(case: Any) -> Callable[[], Any]:
        return lambda: backend.run_backward(case, *case_data(case), make_cotangents(case))

    def mark() -> int:
        return log.mark() if log is not None else 0

    def compiles(since: int, role: str = "") -> tuple[int, int]:
        """(XLA compiles, persistent-cache hits) of our programs whose name contains `role`."""
        if log is None:
            return 0, 0
        ours = [e for e in log.since(since) if "gru_conformance" in e["fun_name"] and role in e["fun_name"]]
        return sum(not e["cache_hit"] for e in ours), sum(e["cache_hit"] for e in ours)

    if run == 1:
        at = mark()
        out["forward_first_s"] = sum(seconds(forward(c)) for c in supported)
        out["forward_compiles"], _ = compiles(at)
        at = mark()
        out["backward_first_s"] = sum(seconds(backward(c)) for c in supported)
        out["backward_compiles"], out["backward_hits"] = compiles(at, "_backward")
        at = mark()
        out["forward_steady_s"] = sum(min(seconds(forward(c)) for _ in range(REPEATS)) for c in supported)
        out["backward_steady_s"] = sum(min(seconds(backward(c)) for _ in range(REPEATS)) for c in supported)
        out["steady_compiles"] = sum(compiles(at))
        return out

    at = mark()
    out["forward_warm_s"] = sum(seconds(forward(c)) for c in supported)
    grads, out["backward_warm_s"] = {}, 0.0
    for case in supported:
        started = time.perf_counter()
        grads[case] = backward(case)()
        out["backward_warm_s"] += time.perf_counter() - started
    out["warm_compiles"], out["warm_hits"] = compiles(at)
    verdicts: dict[str, dict[str, int]] = {}
    worst: dict[str, float] = {}
    for case in supported:
        lengths = case_data(case)[1].lengths
        tolerance = derive_backward(case, backend.precision)
        judged = judge_gradients(case, reference_gradients(case).tensors, grads[case], tolerance, lengths)
        counts = verdicts.setdefault(case.dtype, {})
        counts[judged.verdict.value] = counts.get(judged.verdict.value, 0) + 1
        headrooms = [c.headroom for c in judged.checks if c.kind == "arithmetic" and c.tolerance and c.headroom]
        worst[case.dtype] = max([worst.get(case.dtype, 0.0), *headrooms])
    return {**out, "verdicts": verdicts, "worst_headroom": worst}


def spawn(family: str, tier: str, cache: str, run: int) -> dict[str, Any]:
    env = {**os.environ, "GRU_CONFORMANCE_CACHE": cache, "KERAS_BACKEND": "jax"}
    done = subprocess.run(
        [sys.executable, __file__, "--worker", family, "--tier", tier, "--run", str(run)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{family} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tier", default="pairwise")
    parser.add_argument("--backends", default=",".join(FAMILIES))
    parser.add_argument("--cache", default=None, help="persistent cache root (default: a fresh temporary directory)")
    parser.add_argument("--forward-tier-s", type=float, default=None, help="warm forward tier wall time (run_tier.py)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--run", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "reference":
        print(json.dumps(reference_worker(args.tier)))
        return
    if args.worker:
        print(json.dumps(worker(args.worker, args.tier, args.run)))
        return
    cache = args.cache or tempfile.mkdtemp(prefix="gru-backward-cache-")
    print(f"tier {args.tier}; persistent cache root {cache}; steady = fastest of {REPEATS} per case, summed")
    header = (
        f"{'backend':16} {'cases':>5} {'sigs':>4} | {'fwd 1st':>7} {'XLA':>3} {'bwd 1st':>7} {'XLA':>3} | "
        f"{'fwd st':>6} {'bwd st':>6} {'ratio':>5} | {'fwd warm':>8} {'bwd warm':>8} {'ratio':>5} {'XLA':>3} {'hits':>4}"
    )
    print(header)
    print("-" * len(header))
    failures, verdict_lines = [], []
    totals = {"forward": 0.0, "backward": 0.0}
    for family in args.backends.split(","):
        cold, warm = spawn(family, args.tier, cache, 1), spawn(family, args.tier, cache, 2)
        totals["forward"] += warm["forward_warm_s"]
        totals["backward"] += warm["backward_warm_s"]
        print(
            f"{cold['backend']:16} {cold['cases']:>5} {cold['signatures']:>4} | {cold['forward_first_s']:>7.2f} "
            f"{cold['forward_compiles']:>3} {cold['backward_first_s']:>7.2f} {cold['backward_compiles']:>3} | "
            f"{cold['forward_steady_s']:>6.3f} {cold['backward_steady_s']:>6.3f} "
            f"{cold['backward_steady_s'] / cold['forward_steady_s']:>5.2f} | {warm['forward_warm_s']:>8.2f} "
            f"{warm['backward_warm_s']:>8.2f} {warm['backward_warm_s'] / warm['forward_warm_s']:>5.2f} "
            f"{warm['warm_compiles']:>3} {warm['warm_hits']:>4}"
        )
        for dtype, counts in sorted(warm["verdicts"].items()):
            verdict_lines.append(
                f"{warm['backend']:16} {dtype:9} "
                + ", ".join(f"{v} {n}" for v, n in sorted(counts.items()))
                + f"; worst headroom {warm['worst_headroom'][dtype]:.3g}"
            )
        if family != "torch" and cold["backward_compiles"] + cold["backward_hits"] != cold["signatures"]:
            failures.append(f"{family}: {cold['backward_compiles']} vjp compiles for {cold['signatures']} signatures")
        if warm["warm_compiles"]:
            failures.append(f"{family}: the second process compiled {warm['warm_compiles']} programs")
        if cold["steady_compiles"]:
            failures.append(f"{family}: the steady-state passes compiled")
    reference = spawn("reference", args.tier, cache, 1)
    forward = totals["forward"] + reference["forward_reference_s"]
    backward = totals["backward"] + reference["backward_reference_s"]
    print(
        "\n1st: first pass in a fresh process on a cold cache (XLA = compiles of our forward / vjp programs); "
        "st: steady state; warm: run 2, a new process on the warm cache, each case once (XLA must be 0). "
        "Backend calls only; ratio = backward / forward."
    )
    print(
        f"\nreference side, once per case (fastest of {REPEATS}): forward (oracle + derive) "
        f"{reference['forward_reference_s']:.2f} s, backward (BPTT oracle + derive_backward) "
        f"{reference['backward_reference_s']:.2f} s"
    )
    print(
        f"tier, warm, these backends: forward {totals['forward']:.2f} + {reference['forward_reference_s']:.2f} = "
        f"{forward:.2f} s; backward {totals['backward']:.2f} + {reference['backward_reference_s']:.2f} = "
        f"{backward:.2f} s; backward / forward = {backward / forward:.2f}"
    )
    if args.forward_tier_s:
        share = backward / args.forward_tier_s
        print(
            f"claim: the backward adds {backward:.2f} s to a warm forward tier of {args.forward_tier_s:.2f} s: {share:.2f}x"
        )
        if share > 1.0:
            failures.append(f"the backward adds {share:.2f}x the forward tier's warm time (claim: <= 1x)")
    else:
        print("claim not checked: give the warm forward tier's wall time (benchmarks/run_tier.py) as --forward-tier-s")
    print(f"\nbackward verdicts over the {args.tier} tier (run 2, supported cases, by dtype):")
    for line in verdict_lines:
        print("  " + line)
    for line in failures:
        print("FAIL:", line)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
