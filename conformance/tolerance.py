"""Tolerances derived from the dtype's precision and the problem's size, never tuned per backend.

The derivation (also in README, "How tolerances are derived"):

* u is the unit roundoff of the format the backend computes in: 2**-53 (float64),
  2**-24 (float32), 2**-11 (float16), 2**-8 (bfloat16); 2**-11 for float32 under
  `--precision default` on a GPU, where matmuls may use TF32's 10-bit mantissa.
* Each gate pre-activation is a dot product of length K = (widest layer input) +
  hidden_size + 2 (the two bias additions). With weights bounded by 1/sqrt(H) and
  inputs and states in [-1, 1], the summands are O(1/sqrt(H)) and the sum O(1), so the
  probabilistic rounding model of Higham and Mary (SIAM J. Sci. Comput. 2019) gives an
  error of order u*sqrt(K). The two activations and the state update add about 3u.
  Per step: sigma = u * (sqrt(K) + 3).
* The state update h' = (1-z)*n + z*h is a convex combination, so earlier errors are
  not amplified; errors from N = seq_len * num_layers dependent steps add up like a
  random walk: sigma * sqrt(N).
* The tolerance is LAMBDA = 10 of those standard deviations, so a correct backend sits
  at a headroom (error / tolerance) well below 1, and an implementation computing in a
  coarser format (TF32, bfloat16 accumulation) lands above it.

The verdict compares the maximum absolute error with this tolerance. GRU outputs lie in
(-1, 1), so absolute error is the meaningful scale; relative and ULP errors are recorded
for diagnosis only (they explode at values near zero).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from conformance.case import Case
from conformance.dtypes import TF32_MANTISSA_BITS, fmt

LAMBDA = 10.0


@dataclass(frozen=True)
class Tolerance:
    atol: float
    unit_roundoff: float
    dot_length: int  # K
    steps: int  # N
    compute_format: str  # the format whose u was used, e.g. "float32" or "tf32"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Tolerance:
        return cls(**data)


def derive(case: Case, precision: str = "strict") -> Tolerance:
    """The absolute tolerance for one case; `precision="default"` allows TF32 for float32."""
    compute_format = case.dtype
    u = fmt(case.dtype).unit_roundoff
    if precision == "default" and case.dtype == "float32":
        compute_format = "tf32"
        u = 2.0 ** -(TF32_MANTISSA_BITS + 1)
    widest_input = max(case.input_size, case.hidden_size * case.num_directions if case.num_layers > 1 else 0)
    dot_length = widest_input + case.hidden_size + 2
    steps = case.seq_len * case.num_layers
    sigma = u * (math.sqrt(dot_length) + 3.0)
    return Tolerance(
        atol=LAMBDA * sigma * math.sqrt(steps),
        unit_roundoff=u,
        dot_length=dot_length,
        steps=steps,
        compute_format=compute_format,
    )
