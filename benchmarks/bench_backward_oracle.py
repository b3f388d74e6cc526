"""Time of the backward oracle and its tolerance over a tier, and torch's gradient headroom against it.

For each case: the float64 reference gradients (`reference_gradients`) and the gradient
tolerance (`derive_backward`: 1 clean + 2 * SAMPLES noisy backward passes + the summation
terms), timed with cold caches. With --torch, torch CPU autograd in the case's own dtype is
checked against the tolerance (the worst headroom of a correct backend), and so is the same
gradient with bias_hh's reset block zeroed (a planted bug: its headroom must be >> 1).

    .venv/bin/python benchmarks/bench_backward_oracle.py [--tier pairwise] [--torch]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import numpy as np  # noqa: E402

from conformance.data import case_data  # noqa: E402
from conformance.matrix import cases as tier_cases  # noqa: E402
from conformance.oracle_backward import Gradients, make_cotangents, reference_gradients  # noqa: E402
from conformance.tolerance_backward import BackwardTolerance, backward_error_gain, derive_backward  # noqa: E402


def headrooms(got: dict[str, np.ndarray], expected: Gradients, tolerance: BackwardTolerance) -> dict[str, float]:
    return {n: float(np.abs(got[n] - expected.tensors[n]).max()) / tolerance.atol[n] for n in expected.tensors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tier", default="pairwise")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--torch", action="store_true", help="also check torch CPU autograd against the tolerance")
    args = parser.parse_args()
    cases = tier_cases(args.tier, args.seed)
    total_oracle = total_gain = 0.0
    worst, weakest_bug = (0.0, ""), (float("inf"), "")
    print(
        f"{'case':62s} {'oracle s':>8s} {'gain s':>7s}"
        + ("  torch headroom (tensor)   bug headroom" if args.torch else "")
    )
    for case in cases:
        case_data(case)  # data generation is the forward's cost, not this one's
        make_cotangents(case)
        start = time.perf_counter()
        expected = reference_gradients(case)
        mid = time.perf_counter()
        tolerance = derive_backward(case)
        end = time.perf_counter()
        total_oracle, total_gain = total_oracle + mid - start, total_gain + end - mid
        line = f"{case.id:62s} {mid - start:8.3f} {end - mid:7.3f}"
        if args.torch:
            from test_oracle_backward import dropped_bias_hh_r, torch_gradients

            weights, inputs = case_data(case)
            try:
                got = torch_gradients(case, weights, inputs, make_cotangents(case), case.dtype)
            except RuntimeError as error:
                line += f"  torch refuses: {str(error).splitlines()[0][:60]}"
            else:
                passing = headrooms(got, expected, tolerance)
                name = max(passing, key=passing.__getitem__)
                bug = max(headrooms(dropped_bias_hh_r(got, case.hidden_size), expected, tolerance).values())
                worst = max(worst, (passing[name], f"{case.id} {name}"))
                weakest_bug = min(weakest_bug, (bug, case.id))
                line += f"  {passing[name]:8.3f} ({name:20s}) {bug:10.3g}"
        print(line)
    print(f"{len(cases)} cases: oracle backward {total_oracle:.2f} s, tolerance (gain) {total_gain:.2f} s")
    if args.torch:
        print(
            f"torch worst headroom {worst[0]:.3f} at {worst[1]}; planted bug's smallest headroom {weakest_bug[0]:.3g} at {weakest_bug[1]}"
        )
    backward_error_gain.cache_clear()


if __name__ == "__main__":
    main()
