"""A GRU computed the way a correct kernel computes it in the case's precision.

The oracle answers in float64; a backend asked for bfloat16 cannot. What every correct
kernel does instead: read inputs, weights and states in the case dtype, accumulate dot
products in a wider format (float32 for float32 and the 16-bit formats, float64 for
float64), evaluate the elementwise math in float32, and round what it stores to the case
dtype. `Kernel` is that arithmetic plugged into the oracle's own GRU formula
(`conformance.oracle.Arithmetic`), so it differs from the oracle only in where it rounds,
and its distance from the oracle is the error a correct implementation makes on this very
case: what `conformance.tolerance` derives the tolerance from.

Correct kernels still differ in what they store between two states:

* eager (PyTorch on CPU): every tensor operation rounds its result to the dtype: the
  projections gi = x W_ih^T + b_ih and gh = h W_hh^T + b_hh, each sum, product and
  activation;
* fused cell (PyTorch's CUDA GRU cell): gi and gh are dtype tensors, the gate math
  between them and the new state runs in float32;
* fused (cuDNN, XLA with excess precision): everything between two states is float32.

and in how they write the rest: the update as PyTorch's n + z (h - n) or the oracle's
(1 - z) n + z h, sigmoid as one function or composed from exp, add and divide (NumPy),
b_hr and b_hz kept apart or folded into the input bias (one-bias cells). The eager kernels
round the most, so they make the largest errors; `conformance.tolerance` takes two of them
(`emulated_kernels`) and the README ("How tolerances are derived") has the measurements.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from conformance.case import Case
from conformance.data import GruOutput, Inputs, Weights
from conformance.dtypes import fmt
from conformance.oracle import Arithmetic, gru_reference


def rounded(values: np.ndarray, name: str) -> np.ndarray:
    """float64 values rounded to the named format, held in float64 (where they are exact).

    A 16-bit result rounds through float32 first, as a kernel that computes in float32
    and stores 16 bits does.
    """
    v = np.asarray(values, dtype=np.float64)
    if name == "float64":
        return v
    if name != "float32":
        v = v.astype(np.float32)
    return v.astype(fmt(name).numpy).astype(np.float64)


@dataclass(frozen=True)
class Kernel(Arithmetic):
    """Where one correct kernel design rounds, for one case dtype.

    accumulate: the format dot products accumulate in. projections: the format gi and gh
    are stored in. elementwise: the format each elementwise result is stored in.
    update_form: "torch" for n + z (h - n), "oracle" for (1 - z) n + z h. sigmoid_form:
    "direct" (one function, rounded once) or "composite" (1 / (1 + exp(-v)), each of the
    three operations stored, as NumPy and the ONNX reference evaluator compute it).
    The new state is always stored in the case dtype.
    """

    dtype: str
    accumulate: str
    projections: str
    elementwise: str
    update_form: str = "torch"
    sigmoid_form: str = "direct"

    @property
    def compute(self) -> str:
        """The format elementwise math is evaluated in: float64 for float64 cases, else float32."""
        return "float64" if self.dtype == "float64" else "float32"

    def round(self, values: np.ndarray, name: str) -> np.ndarray:
        """Every rounding goes through here, so a variant (stochastic rounding, say) overrides one method."""
        return rounded(values, name)

    def dot(self, a: np.ndarray, w: np.ndarray) -> np.ndarray:
        """a @ w.T accumulated in `accumulate`.

        A product of two 16-bit or float32 numbers is exact in float64, and a float64 sum of
        the at most ~50 of them here is within a few float64 roundings of exact, so rounding
        it once to float32 is what any float32 summation order gives up to about sqrt(K)
        float32 roundings: invisible next to a 16-bit dtype's roundoff.
        """
        return self.round(a @ w.T, self.accumulate)

    def _gemm(self, a: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
        """A GEMM adding the bias in its accumulator (the epilogue) and storing the result.

        The accumulator's own rounding of the sum is the first step of `rounded` (float32,
        then the stored format), so one call does both.
        """
        return self.round(self.dot(a, w) + b, self.projections)

    def _stored(self, value: np.ndarray) -> np.ndarray:
        """An elementwise result, computed in `compute` (rounded there: `rounded` passes through float32) and stored."""
        return self.round(value, self.elementwise)

    def project(self, xs: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self._gemm(xs, w, b)

    def linear(self, a: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self._gemm(a, w, b)

    def preactivation(self, i: np.ndarray, a: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.add(i, self._gemm(a, w, b))

    def add(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self._stored(a + b)

    def mul(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self._stored(a * b)

    def sigmoid(self, v: np.ndarray) -> np.ndarray:
        if self.sigmoid_form == "composite":
            with np.errstate(over="ignore"):  # exp(-v) overflows a 16-bit format for v < -11: sigmoid is then 0
                return self._stored(1.0 / self._stored(1.0 + self._stored(np.exp(-v))))
        return self._stored(super().sigmoid(v))

    def tanh(self, v: np.ndarray) -> np.ndarray:
        return self._stored(np.tanh(v))

    def update(self, z: np.ndarray, n: np.ndarray, h: np.ndarray) -> np.ndarray:
        if self.update_form == "torch":
            new = self.add(self.mul(self._stored(h - n), z), n)
        else:
            new = self.add(self.mul(self._stored(1.0 - z), n), self.mul(z, h))
        return self.round(new, self.dtype)


def eager(dtype: str, accumulate: str, update_form: str = "torch", sigmoid_form: str = "direct") -> Kernel:
    return Kernel(dtype, accumulate, dtype, dtype, update_form, sigmoid_form)


def fused_cell(dtype: str, accumulate: str, update_form: str = "torch") -> Kernel:
    compute = "float64" if dtype == "float64" else "float32"
    return Kernel(dtype, accumulate, dtype, compute, update_form)


def fused(dtype: str, accumulate: str, update_form: str = "torch") -> Kernel:
    compute = "float64" if dtype == "float64" else "float32"
    return Kernel(dtype, accumulate, compute, compute, update_form)


def folded(weights: Weights, dtype: str) -> Weights:
    """Weights with b_hr and b_hz folded into b_ir and b_iz, the sums rounded to the dtype.

    What a converter to a cell with one bias for r and z does (Flax, Equinox): the same
    GRU, with one more rounding, done once before the first step.
    """
    tensors = dict(weights.tensors)
    for name, b_hh in weights.tensors.items():
        if name.startswith("bias_hh"):
            b_ih_name = name.replace("bias_hh", "bias_ih")
            hidden = len(b_hh) // 3
            b_ih = np.asarray(weights.tensors[b_ih_name], np.float64).copy()
            b_hh = np.asarray(b_hh, np.float64).copy()
            b_ih[: 2 * hidden] = rounded(b_ih[: 2 * hidden] + b_hh[: 2 * hidden], dtype)
            b_hh[: 2 * hidden] = 0.0
            tensors[b_ih_name], tensors[name] = b_ih, b_hh
    return Weights(tensors)


def emulate(case: Case, weights: Weights, inputs: Inputs, kernel: Kernel, fold_biases: bool = False) -> GruOutput:
    """The case computed with `kernel`'s arithmetic, in float64 arrays holding dtype-exact values."""
    if fold_biases:
        weights = folded(weights, case.dtype)
    return gru_reference(case, weights, inputs, arithmetic=kernel)


def max_error(expected: GruOutput, actual: GruOutput) -> float:
    """Largest |actual - expected| over output and h_n (padded outputs are 0 in both): what the verdict compares."""
    return float(
        max(
            np.max(np.abs(np.asarray(actual.output, np.float64) - expected.output), initial=0.0),
            np.max(np.abs(np.asarray(actual.h_n, np.float64) - expected.h_n), initial=0.0),
        )
    )
