"""Tolerances derived from the dtype's precision and the problem itself, never tuned per backend.

The derivation (README, "How tolerances are derived", repeats it):

* Per step, a correct implementation makes a rounding error of about
      sigma = 3 u_io + sqrt(K) u_acc
  u_io is the unit roundoff of the case dtype, the format values are stored in between
  operations: 2**-53 (float64), 2**-24 (float32), 2**-11 (float16), 2**-8 (bfloat16);
  storing the gates, the candidate and the new state rounds about three times. u_acc is
  that of the format dot products accumulate in: the case dtype for float32 and float64,
  float32 for float16 and bfloat16 (what every kernel library here does; a backend
  accumulating in 16 bits then shows as a precision failure, which it is), and TF32's
  2**-11 for float32 under `--precision default`. A gate pre-activation is a dot product
  of length K = (widest layer input) + hidden_size + 2 (the two bias additions) with O(1)
  sum, so the probabilistic model of Higham and Mary (SIAM J. Sci. Comput., 2019) puts
  its error at sqrt(K) u_acc.
* How far those errors travel depends on the recurrence: a contracting GRU forgets
  them, a long stack of layers passes them on. The case's own error gain G measures
  that by Monte Carlo arithmetic on the float64 oracle: add independent noise of unit
  variance times a probe size to every new state of every step, layer and direction, and
  take the largest deviation of any output or h_n element from the clean oracle, over
  SAMPLES independent draws, divided by the probe size. The noise comes from the case's
  own deterministic streams, so G is the same on every machine (to float64 rounding).
  G already includes the "largest of many elements" effect (it is a maximum).
* atol = LAMBDA * sigma * G, with LAMBDA = 2 covering the spread of a maximum over a
  few samples and the first-order model.

The verdict compares the maximum absolute error with this tolerance. GRU outputs lie in
(-1, 1), so absolute error is the meaningful scale; relative and ULP errors are recorded
for diagnosis only (they explode at values near zero).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from conformance.case import Case
from conformance.data import case_data, uniform
from conformance.dtypes import TF32_MANTISSA_BITS, fmt
from conformance.oracle import gru_reference

LAMBDA = 2.0
STORE_ROUNDINGS = 3
SAMPLES = 4
PROBE = 2.0**-30  # far above float64 rounding, far below anything nonlinear


@dataclass(frozen=True)
class Tolerance:
    atol: float
    unit_roundoff: float  # u_io, of the case dtype (or the narrower format a backend states it computes in)
    accumulate_roundoff: float  # u_acc
    accumulate_format: str  # "float64", "float32" or "tf32"
    dot_length: int  # K
    steps: int  # seq_len * num_layers, for reference
    gain: float  # G, the case's measured error gain

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@lru_cache(maxsize=256)
def error_gain(case: Case) -> float:
    """G: the largest output or h_n deviation per unit of per-step state noise, over SAMPLES draws."""
    weights, inputs = case_data(case)
    clean = gru_reference(case, weights, inputs)
    shape = (case.seq_len, case.batch, case.hidden_size)
    bound = math.sqrt(3.0)  # uniform on [-sqrt 3, sqrt 3] has unit variance
    gain = 0.0
    for sample in range(SAMPLES):
        noise = [
            PROBE * uniform(case, f"tolerance-probe-{sample}-{index}", shape, -bound, bound)
            for index in range(case.num_layers * case.num_directions)
        ]
        noisy = gru_reference(case, weights, inputs, step_noise=noise)
        deviation = max(np.abs(noisy.output - clean.output).max(), np.abs(noisy.h_n - clean.h_n).max())
        gain = max(gain, float(deviation) / PROBE)
    # Four significant digits: BLAS builds differ in float64's last bits, the tolerance must not.
    return float(f"{gain:.4g}")


def derive(case: Case, precision: str = "strict", computes_in: str | None = None) -> Tolerance:
    """The absolute tolerance for one case; `precision="default"` allows TF32 for float32.

    `computes_in` is the format a backend states it really computes in (OpenVINO's
    bfloat16 inference precision, read from the library). Under `--precision default` it
    replaces the TF32 assumption for the cases that mode relaxes (all but float64): a
    16-bit storage format rounds every stored value (u_io), accumulation stays float32.
    Strict mode and float64 ignore it: there a narrower format is a finding, not an allowance.
    """
    u_io = fmt(case.dtype).unit_roundoff
    accumulate = "float64" if case.dtype == "float64" else "float32"
    u_acc = fmt(accumulate).unit_roundoff
    if precision == "default" and accumulate == "float32":
        if computes_in in (None, "tf32"):
            accumulate, u_acc = "tf32", 2.0 ** -(TF32_MANTISSA_BITS + 1)
        else:  # values stored in the stated format between operations
            u_io = max(u_io, fmt(computes_in).unit_roundoff)
    widest_input = max(case.input_size, case.hidden_size * case.num_directions if case.num_layers > 1 else 0)
    dot_length = widest_input + case.hidden_size + 2
    sigma = STORE_ROUNDINGS * u_io + math.sqrt(dot_length) * u_acc
    gain = error_gain(case)
    return Tolerance(
        atol=LAMBDA * sigma * gain,
        unit_roundoff=u_io,
        accumulate_roundoff=u_acc,
        accumulate_format=accumulate,
        dot_length=dot_length,
        steps=case.seq_len * case.num_layers,
        gain=gain,
    )
