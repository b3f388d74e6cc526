"""Tolerances derived from the dtype's precision and the problem's size, never tuned per backend.

The derivation (README, "How tolerances are derived", repeats it):

* u_io is the unit roundoff of the case dtype, the format values are stored in between
  operations: 2**-53 (float64), 2**-24 (float32), 2**-11 (float16), 2**-8 (bfloat16).
  u_acc is that of the format dot products accumulate in: the case dtype for float32
  and float64, float32 for float16 and bfloat16 (what every kernel library here does;
  a backend accumulating in 16 bits then shows as a precision failure, which it is).
  Under `--precision default`, float32 matmuls may run in TF32 (10-bit mantissa), so
  u_acc = 2**-11 for float32 there.
* Each gate pre-activation is a dot product of length K = (widest layer input) +
  hidden_size + 2 (the two bias additions). Weights are bounded by 1/sqrt(H) and
  inputs and states lie in [-1, 1], so its terms are small and its sum O(1); the
  probabilistic rounding model of Higham and Mary (SIAM J. Sci. Comput., 2019) puts
  its error at u_acc * sqrt(K). Storing the gates, the candidate and the new state
  rounds about three more times: 3 * u_io. Per step, sigma = 3 u_io + sqrt(K) u_acc.
* h' = (1-z)*n + z*h is a convex combination, so an earlier error is not amplified
  by the update; errors of the N = seq_len * num_layers dependent steps add up like a
  random walk: sigma * sqrt(N).
* The tolerance is LAMBDA = 4 of those: about the largest of 10**4 to 10**5 Gaussian
  draws (sqrt(2 ln n)), the number of elements a large case compares.

The verdict compares the maximum absolute error with this tolerance. GRU outputs lie in
(-1, 1), so absolute error is the meaningful scale; relative and ULP errors are recorded
for diagnosis only (they explode at values near zero). The bound is conservative on long
sequences, where real GRUs contract and errors stop growing; the recorded headroom
(error / tolerance) shows by how much.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from conformance.case import Case
from conformance.dtypes import TF32_MANTISSA_BITS, fmt

LAMBDA = 4.0
STORE_ROUNDINGS = 3


@dataclass(frozen=True)
class Tolerance:
    atol: float
    unit_roundoff: float  # u_io, of the case dtype
    accumulate_roundoff: float  # u_acc
    accumulate_format: str  # "float64", "float32" or "tf32"
    dot_length: int  # K
    steps: int  # N

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def derive(case: Case, precision: str = "strict") -> Tolerance:
    """The absolute tolerance for one case; `precision="default"` allows TF32 for float32."""
    u_io = fmt(case.dtype).unit_roundoff
    accumulate = "float64" if case.dtype == "float64" else "float32"
    u_acc = fmt(accumulate).unit_roundoff
    if precision == "default" and accumulate == "float32":
        accumulate, u_acc = "tf32", 2.0 ** -(TF32_MANTISSA_BITS + 1)
    widest_input = max(case.input_size, case.hidden_size * case.num_directions if case.num_layers > 1 else 0)
    dot_length = widest_input + case.hidden_size + 2
    steps = case.seq_len * case.num_layers
    sigma = STORE_ROUNDINGS * u_io + math.sqrt(dot_length) * u_acc
    return Tolerance(
        atol=LAMBDA * sigma * math.sqrt(steps),
        unit_roundoff=u_io,
        accumulate_roundoff=u_acc,
        accumulate_format=accumulate,
        dot_length=dot_length,
        steps=steps,
    )
