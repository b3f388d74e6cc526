"""Tolerances derived from the error a correct implementation makes on the case itself, never tuned per backend.

The derivation (README, "How tolerances are derived", has the measurements behind it):

16-bit cases (bfloat16, float16): emulate a correct kernel, allow the measured spread.
* `conformance.emulate` computes the case the way a correct 16-bit kernel does: inputs,
  weights and states in the dtype, dot products accumulated in float32, elementwise math
  in float32, every stored tensor rounded to the dtype. E is the largest |emulated -
  oracle| over output and h_n, over two designs that stand for real libraries
  (`emulated_kernels`; the first reproduces PyTorch on CPU bit for bit).
* E is floored at u_io * max|expected| (u_io = 2**-8 for bfloat16, 2**-11 for float16):
  storing the exact answer in the dtype errs up to that, and on a case with a handful of
  outputs the emulated maximum can fall below it by luck.
* atol = SAFETY * max(E, floor). SAFETY is how far other correct implementations' errors
  spread above that estimate, measured: real backends up to 1.70x (smoke and pairwise,
  seeds 0-3) and 2.31x (a 1/100 shard of the full tier's 16-bit cases); 256 other correct
  designs (each kind of intermediate stored in the dtype or kept in float32, either update
  form, sigmoid direct or composed, bias in the GEMM's epilogue or added after it, biases
  folded or not) up to 2.02x on the smoke and pairwise cases and 2.63x on 300 random
  full-tier cases (24 designs each). The largest spreads are on cases with a handful of
  outputs, where a maximum over few elements is a lottery. SAFETY = 3 is the worst spread
  rounded up. On the smoke and pairwise tiers that is 2.5-72x (median 7x) tighter than
  the first-order model below; a GRU accumulating its dot products in 16 bits fails once
  they are long (K ~ 1000: headroom about 4); at the matrix's K <= 50 its error is a
  correct kernel's, so no tolerance can tell them apart there.

float32 and float64: the first-order model, because an emulation does not bound them.
A float64 emulation measured against a float64 oracle measures nothing; at float32 the
libraries' own tanh/exp approximations (a few ulp) are as large as the roundings an
emulation models (measured: onnxruntime errs 2.7x the emulated float32 error, where at
16 bits such differences vanish under the 16-bit rounding). So, as before:
* sigma = 3 u_io + sqrt(K) u_acc per step: storing gates, candidate and state rounds
  about three times; a gate's dot product of length K = widest layer input +
  hidden_size + 2 accumulates with error sqrt(K) u_acc (Higham and Mary, SIAM J. Sci.
  Comput., 2019); u_acc is the dtype's, or TF32's 2**-11 for float32 under
  `--precision default`.
* G, the case's error gain, measured on the float64 oracle by Monte Carlo arithmetic:
  independent unit-variance noise times a tiny probe added to every new state, the
  largest deviation of any output or h_n element over SAMPLES draws, per unit probe.
* atol = FIRST_ORDER_FACTOR * sigma * G, the factor 2 covering a maximum over only
  SAMPLES draws; real backends reach at most 0.085 of it at float32 (pairwise, seeds 0-3).

The verdict compares the maximum absolute error with atol: GRU outputs lie in (-1, 1),
so absolute error is the meaningful scale; relative and ULP errors are for diagnosis.
E, the floor and G keep four significant digits, so BLAS and SIMD differences in
float64's last bits never reach a tolerance: it is the same on every machine.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from conformance.case import Case
from conformance.data import GruOutput, case_data, uniform
from conformance.dtypes import TF32_MANTISSA_BITS, fmt
from conformance.emulate import Kernel, eager, emulate, max_error
from conformance.oracle import gru_reference

SAFETY = 3.0  # the measured worst spread of correct implementations above max(E, floor), 2.63, rounded up
FIRST_ORDER_FACTOR = 2.0
STORE_ROUNDINGS = 3
SAMPLES = 4
PROBE = 2.0**-30  # far above float64 rounding, far below anything nonlinear
EMULATED_DTYPES = ("bfloat16", "float16")


def _significant(value: float) -> float:
    """Four significant digits: BLAS builds and SIMD tanh differ in float64's last bits, a tolerance must not."""
    return float(f"{value:.4g}")


@dataclass(frozen=True)
class Tolerance:
    atol: float
    method: str  # "emulated" (16-bit dtypes) or "first-order" (float32, float64)
    safety: float  # atol / the error estimate it multiplies: SAFETY or FIRST_ORDER_FACTOR
    emulated_error: float | None  # E: the emulated correct kernels' largest error (16-bit only)
    output_rounding: float | None  # u_io * max|expected|, E's floor (16-bit only)
    unit_roundoff: float  # u_io, of the case dtype (or the narrower format a backend states it computes in)
    accumulate_roundoff: float  # u_acc
    accumulate_format: str  # "float64", "float32" or "tf32"
    dot_length: int  # K
    steps: int  # seq_len * num_layers, for reference
    gain: float  # G, the case's measured error gain (the first-order model's; recorded for every case)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@lru_cache(maxsize=256)
def _oracle(case: Case) -> GruOutput:
    weights, inputs = case_data(case)
    return gru_reference(case, weights, inputs)


@lru_cache(maxsize=256)
def error_gain(case: Case) -> float:
    """G: the largest output or h_n deviation per unit of per-step state noise, over SAMPLES draws."""
    weights, inputs = case_data(case)
    clean = _oracle(case)
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
    return _significant(gain)


def emulated_kernels(dtype: str) -> tuple[tuple[Kernel, bool], ...]:
    """(kernel, fold_biases) of the correct designs E is the largest error of.

    Both store every tensor in the dtype (they round the most of all correct designs) and
    each stands for real implementations: PyTorch eager (bit for bit on CPU), and NumPy's
    way (the ONNX reference evaluator's): sigmoid composed as 1 / (1 + exp(-v)) from three
    stored operations, b_hr and b_hz folded into the input bias, the update (1 - z) n + z h.
    """
    return (
        (eager(dtype, "float32", "torch"), False),
        (eager(dtype, "float32", "oracle", "composite"), True),
    )


@lru_cache(maxsize=256)
def emulated_error(case: Case) -> float:
    """E: the largest error of the emulated correct kernels in the case dtype, vs the float64 oracle."""
    weights, inputs = case_data(case)
    expected = _oracle(case)
    return _significant(
        max(
            max_error(expected, emulate(case, weights, inputs, kernel, fold_biases=fold))
            for kernel, fold in emulated_kernels(case.dtype)
        )
    )


@lru_cache(maxsize=256)
def output_rounding(case: Case) -> float:
    """u_io * max|expected|: the largest error of storing the exact answer in the case dtype."""
    expected = _oracle(case)
    largest = max(np.abs(expected.output).max(initial=0.0), np.abs(expected.h_n).max(initial=0.0))
    return _significant(fmt(case.dtype).unit_roundoff * float(largest))


def derive(case: Case, precision: str = "strict", computes_in: str | None = None) -> Tolerance:
    """The absolute tolerance for one case; `precision="default"` allows TF32 for float32.

    TF32 rounds a GEMM's operands to 10 explicit mantissa bits; 16-bit operands already fit
    (bfloat16 has 7, float16 10), so it changes neither a 16-bit case's arithmetic nor its tolerance.

    `computes_in` is the format a backend states it really computes in (OpenVINO's
    bfloat16 inference precision, read from the library). Under `--precision default` a
    stated format replaces the TF32 assumption: accumulation stays float32, and a format
    narrower than the case dtype rounds every stored value (u_io) and takes the first-order
    model (the emulated kernels model a case dtype's own arithmetic, not a narrower one).
    Strict mode and float64 ignore it: there a narrower format is a finding, not an allowance.
    """
    u_io = fmt(case.dtype).unit_roundoff
    accumulate = "float64" if case.dtype == "float64" else "float32"
    u_acc = fmt(accumulate).unit_roundoff
    stated = None if computes_in in (None, "tf32") else fmt(str(computes_in)).unit_roundoff
    if precision != "default" or case.dtype == "float64":
        stated = None
    narrower = stated is not None and stated > u_io
    if stated is not None:  # values stored in the stated format between operations; no TF32 allowance
        u_io = max(u_io, stated)
    elif precision == "default" and case.dtype == "float32":
        accumulate, u_acc = "tf32", 2.0 ** -(TF32_MANTISSA_BITS + 1)
    widest_input = max(case.input_size, case.hidden_size * case.num_directions if case.num_layers > 1 else 0)
    dot_length = widest_input + case.hidden_size + 2
    gain = error_gain(case)
    error: float | None = None
    floor: float | None = None
    if case.dtype in EMULATED_DTYPES and not narrower:
        method, safety = "emulated", SAFETY
        error, floor = emulated_error(case), output_rounding(case)
        atol = SAFETY * max(error, floor)
    else:
        method, safety = "first-order", FIRST_ORDER_FACTOR
        sigma = STORE_ROUNDINGS * u_io + math.sqrt(dot_length) * u_acc
        atol = FIRST_ORDER_FACTOR * sigma * gain
    return Tolerance(
        atol=atol,
        method=method,
        safety=safety,
        emulated_error=error,
        output_rounding=floor,
        unit_roundoff=u_io,
        accumulate_roundoff=u_acc,
        accumulate_format=accumulate,
        dot_length=dot_length,
        steps=case.seq_len * case.num_layers,
        gain=gain,
    )
