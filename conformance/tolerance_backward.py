"""Tolerances for gradients, derived like the forward's (`conformance.tolerance`), one per gradient tensor.

A backend's gradient differs from the float64 oracle's (`conformance.oracle_backward`) through
three kinds of rounding; each is modelled by what the forward derivation already uses, and
the tolerance of gradient tensor k is

    atol_k = FIRST_ORDER_FACTOR * (sigma_f * Gs_k  +  sigma_b * Ga_k  +  u_sum * A_k)

* The forward states. The backward reads the forward's states and gates, which a correct
  implementation has computed with the forward's per-step error sigma_f = 3 u_io + sqrt(K_f)
  u_acc (K_f = widest layer input + H + 2, exactly as `derive`). Gs_k measures what that does
  to gradient k by Monte Carlo arithmetic on the oracle, as `error_gain` does for the
  outputs: unit-variance noise times PROBE added to every new state of every step, layer and
  direction; Gs_k = largest deviation of any element of gradient k / PROBE, over SAMPLES draws.
* The adjoint pass. Each step computes the adjoint of the previous state,
      dL/dh_{t-1} = z * dL/dh_t + W_hh^T d(gates)_t        (the other form: W_hn^T ... * r)
  a dot product of length K_b = 3H + 1, plus elementwise products stored about three times
  (the gate adjoints, the candidate's, the new adjoint), so its per-step relative error is
  sigma_b = 3 u_io + sqrt(K_b) u_acc. The adjoint passed down a stack (W_ih^T d(gates)_t, length
  3H per direction) is no longer, so K_b covers it too. Unlike states, adjoints are not O(1):
  they carry every later cotangent, summed. So the probe is relative: unit-variance noise times
  PROBE times the item's largest adjoint element at that step, added to the adjoint state at
  every step, layer and direction (`gru_backward`'s adjoint_noise). Ga_k = largest
  deviation of gradient k / PROBE over SAMPLES draws: in gradient units, already scaled by
  how large gradient k is, how the recurrence carries an adjoint error back, and the
  "largest of many elements" effect.
* The sums over steps and batch. A parameter's gradient is a sum of T*B terms, one per
  (step, item) its cell ran at: g = sum_t C_t, C_t = sum_b c_tb. Its size, and its rounding,
  grow with T*B. A step-by-step backward (autograd through a loop, lax.scan's transpose, a
  fused RNN kernel per step) adds C_t into a running sum S_t in the storage format; to first
  order the error is sum_t (delta_t S_t + epsilon_t C_t) with independent |delta|, |epsilon| <= u,
  whose spread is u * sqrt(sum_t S_t^2 + sum_t (sum_b |c_tb|)^2). A_k is the largest of that
  root-sum-square over the elements of k, taken with the oracle's terms in the adjoint pass's
  order, and u_sum = max(u_io, u_acc) (the running sum lives in the storage format; a TF32
  product rounds to u_acc). One GEMM over all T*B terms (blocked summation in u_acc) does
  better, so this is the larger of the two. It is not Higham and Mary's order-free bound
  sqrt(T*B) u sum|c|: with terms of either sign that exceeds the spread of a real sum by
  about sqrt(T*B) (28 at 260 steps and batch 3) and would make a 16-bit gradient's tolerance
  larger than the gradient. x and h0 are not sums over steps: A is 0 for them.

FIRST_ORDER_FACTOR = 2 as in the forward (the spread of a maximum over a few samples, first order).
atol_k is never below the format's smallest normal number, so a headroom always exists;
that floor binds only where the oracle's gradient is exactly zero in every term (weight_hh
after a single step from a zero state), and then a correct backend's is exactly zero too.
Every ingredient is recorded in `BackwardTolerance`. The check is per tensor: the largest
absolute error of gradient k against atol_k, headroom = error / atol_k.
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
from conformance.oracle_backward import (
    Gradients,
    SumTerms,
    gru_backward,
    make_cotangents,
    parameter_sum_terms,
    reference_gradients,
)
from conformance.tolerance import FIRST_ORDER_FACTOR, PROBE, SAMPLES, STORE_ROUNDINGS


@dataclass(frozen=True)
class BackwardGain:
    """Per gradient tensor (keys as `Gradients.tensors`): what the case's recurrence does to rounding errors."""

    state: dict[str, float]  # Gs: largest deviation per unit of absolute noise on the forward states
    adjoint: dict[str, float]  # Ga: largest deviation per unit of relative noise on the adjoint states
    accumulation: dict[str, float]  # A: largest root-sum-square of the running sums and terms (0: not a sum)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BackwardTolerance:
    atol: dict[str, float]  # per gradient tensor
    unit_roundoff: float  # u_io, of the case dtype
    accumulate_roundoff: float  # u_acc
    accumulate_format: str  # "float64", "float32" or "tf32"
    forward_dot_length: int  # K_f
    adjoint_dot_length: int  # K_b = 3H + 1
    sum_terms: int  # T*B: the most terms a parameter gradient sums
    sigma_forward: float  # sigma_f
    sigma_adjoint: float  # sigma_b
    sum_roundoff: float  # u_sum
    gain: BackwardGain

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _four_digits(value: float) -> float:
    # BLAS builds differ in float64's last bits; the tolerance must not.
    return float(f"{value:.4g}")


def _deviation(noisy: Gradients, clean: Gradients) -> dict[str, float]:
    return {name: float(np.abs(noisy.tensors[name] - clean.tensors[name]).max(initial=0.0)) for name in clean.tensors}


def _accumulation(terms: SumTerms) -> float:
    """max over elements of sqrt(sum_t S_t^2 + sum_t (sum_b |c_tb|)^2), S_t the running sum in the adjoint pass's order."""
    running = np.cumsum(terms.signed, axis=0)
    return float(np.sqrt((running**2).sum(axis=0) + (terms.magnitude**2).sum(axis=0)).max(initial=0.0))


@lru_cache(maxsize=256)
def backward_error_gain(case: Case) -> BackwardGain:
    """Gs, Ga and A of every gradient tensor of `case` (torch's reset form), on the float64 oracle."""
    weights, inputs = case_data(case)
    cotangents = make_cotangents(case)
    clean = reference_gradients(case)  # cached: the same pass the check compares against
    shape = (case.seq_len, case.batch, case.hidden_size)
    bound = math.sqrt(3.0)  # uniform on [-sqrt 3, sqrt 3] has unit variance
    cells = range(case.num_layers * case.num_directions)
    state = dict.fromkeys(clean.tensors, 0.0)
    adjoint = dict.fromkeys(clean.tensors, 0.0)
    for sample in range(SAMPLES):
        noise = [PROBE * uniform(case, f"backward-state-probe-{sample}-{i}", shape, -bound, bound) for i in cells]
        noisy = gru_backward(case, weights, inputs, cotangents, state_noise=noise)
        for name, dev in _deviation(noisy, clean).items():
            state[name] = max(state[name], dev / PROBE)
        noise = [PROBE * uniform(case, f"backward-adjoint-probe-{sample}-{i}", shape, -bound, bound) for i in cells]
        noisy = gru_backward(case, weights, inputs, cotangents, adjoint_noise=noise)
        for name, dev in _deviation(noisy, clean).items():
            adjoint[name] = max(adjoint[name], dev / PROBE)
    accumulation = dict.fromkeys(clean.tensors, 0.0)
    terms = parameter_sum_terms(case, weights, inputs, cotangents)
    accumulation.update((name, _accumulation(summed)) for name, summed in terms.items())
    return BackwardGain(
        state={k: _four_digits(v) for k, v in state.items()},
        adjoint={k: _four_digits(v) for k, v in adjoint.items()},
        accumulation={k: _four_digits(v) for k, v in accumulation.items()},
    )


def derive_backward(case: Case, precision: str = "strict") -> BackwardTolerance:
    """The absolute tolerance of each gradient tensor of `case`; `precision="default"` allows TF32 for float32."""
    u_io = fmt(case.dtype).unit_roundoff
    accumulate = "float64" if case.dtype == "float64" else "float32"
    u_acc = fmt(accumulate).unit_roundoff
    if precision == "default" and accumulate == "float32":
        accumulate, u_acc = "tf32", 2.0 ** -(TF32_MANTISSA_BITS + 1)
    widest_input = max(case.input_size, case.hidden_size * case.num_directions if case.num_layers > 1 else 0)
    forward_dot = widest_input + case.hidden_size + 2
    adjoint_dot = 3 * case.hidden_size + 1
    sigma_f = STORE_ROUNDINGS * u_io + math.sqrt(forward_dot) * u_acc
    sigma_b = STORE_ROUNDINGS * u_io + math.sqrt(adjoint_dot) * u_acc
    u_sum = max(u_io, u_acc)
    gain = backward_error_gain(case)
    floor = fmt(case.dtype).tiny
    atol = {
        name: max(
            floor,
            FIRST_ORDER_FACTOR
            * (sigma_f * gain.state[name] + sigma_b * gain.adjoint[name] + u_sum * gain.accumulation[name]),
        )
        for name in gain.state
    }
    return BackwardTolerance(
        atol=atol,
        unit_roundoff=u_io,
        accumulate_roundoff=u_acc,
        accumulate_format=accumulate,
        forward_dot_length=forward_dot,
        adjoint_dot_length=adjoint_dot,
        sum_terms=case.seq_len * case.batch,
        sigma_forward=sigma_f,
        sigma_adjoint=sigma_b,
        sum_roundoff=u_sum,
        gain=gain,
    )
