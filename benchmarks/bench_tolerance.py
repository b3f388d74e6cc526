"""How well the derived tolerance separates correct 16-bit arithmetic from wrong, and what it costs.

For every 16-bit case of the chosen tiers and seeds it prints: the emulated correct error E
(conformance.emulate), its floor, atol, and the error and headroom (error / atol) of
tests/planted_backends.py's GRUs: Rounds16 (correct: every tensor rounded to the dtype,
float32 accumulation), Accumulates16 (wrong: dot products accumulated in 16 bits),
SwappedRZ and DroppedBhn (gross bugs). Then the same for a few cases with long dot
products (outside the matrix), where 16-bit accumulation becomes visible. Then the
time `derive` takes per case, split into the error gain and the emulation.

    .venv/bin/python benchmarks/bench_tolerance.py [--tiers smoke,pairwise] [--seeds 0,1,2,3] [--timing-sample 200]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "examples")]

from planted_backends import Accumulates16, DroppedBhn, Rounds16, SwappedRZ  # noqa: E402

from conformance import matrix, tolerance  # noqa: E402
from conformance.case import Case  # noqa: E402
from conformance.data import case_data  # noqa: E402
from conformance.emulate import max_error  # noqa: E402

LONG_DOTS = [Case(k, 16, batch=3, seq_len=5, dtype=d) for k in (64, 256, 1024) for d in ("bfloat16", "float16")]


def row(case: Case) -> dict[str, float]:
    weights, inputs = case_data(case)
    expected = tolerance._oracle(case)
    tol = tolerance.derive(case)
    out = {"E": tol.emulated_error or 0.0, "floor": tol.output_rounding or 0.0, "atol": tol.atol}
    planted = {"rounds16": Rounds16, "acc16": Accumulates16, "swap_rz": SwappedRZ, "drop_bhn": DroppedBhn}
    for name, backend in planted.items():
        if name == "drop_bhn" and not case.bias:
            out[name] = float("nan")
            continue
        out[name] = max_error(expected, backend().run(case, weights, inputs))
    return out


def table(cases: list[Case]) -> None:
    print(
        f"{'case':62s} {'E':>8s} {'floor':>8s} {'atol':>8s} | {'rounds16':>8s} {'hr':>5s} | {'acc16':>8s} {'hr':>5s}"
        f" | {'swap_rz hr':>10s} {'drop_bhn hr':>11s}"
    )
    worst = {"rounds16": 0.0, "acc16": 0.0, "swap_rz": float("inf"), "drop_bhn": float("inf")}
    for case in cases:
        r = row(case)
        hr = {k: r[k] / r["atol"] for k in ("rounds16", "acc16", "swap_rz", "drop_bhn")}
        print(
            f"{case.id:62s} {r['E']:8.3g} {r['floor']:8.3g} {r['atol']:8.3g} | {r['rounds16']:8.3g} "
            f"{hr['rounds16']:5.2f} | {r['acc16']:8.3g} {hr['acc16']:5.2f} | {hr['swap_rz']:10.1f} {hr['drop_bhn']:11.1f}"
        )
        worst["rounds16"] = max(worst["rounds16"], hr["rounds16"])
        worst["acc16"] = max(worst["acc16"], hr["acc16"])
        for bug in ("swap_rz", "drop_bhn"):
            if hr[bug] == hr[bug]:  # not nan
                worst[bug] = min(worst[bug], hr[bug])
    print(
        f"worst: rounds16 headroom {worst['rounds16']:.2f} (must stay < 1), acc16 headroom max {worst['acc16']:.2f}, "
        f"swap_rz headroom min {worst['swap_rz']:.1f}, drop_bhn headroom min {worst['drop_bhn']:.1f}\n"
    )


def timing(tier: str, sample: int) -> None:
    """Seconds per case for the gain and for the emulation, on the tier or a random sample of it."""
    cases = matrix.cases(tier, 0)
    picked = cases if sample <= 0 or sample >= len(cases) else random.Random(0).sample(cases, sample)
    for cached in (tolerance.error_gain, tolerance.emulated_error, tolerance.output_rounding):
        cached.cache_clear()  # the tables above computed some of these already
    gain_s = emul_s = 0.0
    emulated = 0
    for case in picked:
        tolerance._oracle(case)  # the oracle itself is computed once per case anyway (the engine's reference)
        started = time.perf_counter()
        tolerance.error_gain(case)
        gained = time.perf_counter()
        if case.dtype in tolerance.EMULATED_DTYPES:
            tolerance.emulated_error(case)
            tolerance.output_rounding(case)
            emulated += 1
        emul_s += time.perf_counter() - gained
        gain_s += gained - started
    scale = len(cases) / len(picked)
    print(
        f"{tier}: {len(cases)} cases ({len(picked)} timed, {emulated} of them 16-bit): error gain {gain_s * scale:.1f} s, "
        f"emulation {emul_s * scale:.1f} s for the whole tier (emulation adds {emul_s / max(gain_s, 1e-9):.0%} "
        f"to the tolerance's cost)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiers", default="smoke,pairwise")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--timing-sample", type=int, default=200, help="full-tier cases to time (0: no full tier)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    cases = [
        case
        for tier in args.tiers.split(",")
        for seed in seeds
        for case in matrix.cases(tier, seed)
        if case.dtype in tolerance.EMULATED_DTYPES
    ]
    print(f"16-bit cases of {args.tiers}, seeds {args.seeds} (SAFETY = {tolerance.SAFETY}):")
    table(cases)
    print("long dot products (K = input_size + hidden_size + 2; not in the matrix):")
    table(LONG_DOTS)
    timing("pairwise", 0)
    if args.timing_sample:
        timing("full", args.timing_sample)


if __name__ == "__main__":
    main()
