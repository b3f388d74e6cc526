"""Wrong GRUs with one known bug each: the checks must catch every one, at the right place.

Each wraps the example NumPy adapter (a correct GRU) and plants one bug the way a
real adapter or converter gets it wrong.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
from example_gru_backend.adapter import NumpyGru

from conformance.case import Case
from conformance.data import GruOutput, Inputs, Weights
from conformance.dtypes import quantize


def _rows(weights: Weights, edit) -> Weights:  # type: ignore[no-untyped-def]
    return Weights({k: edit(k, np.array(v)) for k, v in weights.tensors.items()})


def _swap_rz(name: str, value: np.ndarray) -> np.ndarray:
    if name.startswith(("weight", "bias")):
        r, z, n = np.split(value, 3, axis=0)
        return np.concatenate([z, r, n], axis=0)
    return value


def _drop_b_hn(name: str, value: np.ndarray) -> np.ndarray:
    if name.startswith("bias_hh"):
        value[2 * (len(value) // 3) :] = 0
    return value


@dataclass
class SwappedRZ(NumpyGru):
    """Reads the gates in (z, r, n) order: the classic Keras/ONNX gate-order slip."""

    family: str = "planted-swap-rz"

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        return super().run(case, _rows(weights, _swap_rz), inputs)


@dataclass
class DroppedBhn(NumpyGru):
    """Drops b_hn, as a converter does when the target cell has no bias inside r*(...)."""

    family: str = "planted-drop-bhn"

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        return super().run(case, _rows(weights, _drop_b_hn), inputs)


@dataclass
class ReverseIgnoresLengths(NumpyGru):
    """The backward direction starts at step T-1 for every item, padding included."""

    family: str = "planted-reverse-lengths"

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        right = super().run(case, weights, inputs)
        if inputs.lengths is None or not case.bidirectional or case.num_layers != 1:
            return right
        dense = super().run(case, weights, replace(inputs, lengths=None))
        h = case.hidden_size
        output = np.array(right.output)
        valid = np.asarray(right.output[..., h:]) != 0
        output[..., h:] = np.where(valid, dense.output[..., h:], 0)
        h_n = np.array(right.h_n)
        h_n[1] = dense.h_n[1]
        return GruOutput(output, h_n)


@dataclass
class SwappedHnDirections(NumpyGru):
    """h_n ordered backward-before-forward within each layer."""

    family: str = "planted-hn-order"

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        right = super().run(case, weights, inputs)
        h_n = np.array(right.h_n)
        if case.bidirectional:
            h_n = h_n.reshape(case.num_layers, 2, *h_n.shape[1:])[:, ::-1].reshape(h_n.shape)
        return GruOutput(right.output, np.ascontiguousarray(h_n))


@dataclass
class GarbageInPadding(NumpyGru):
    """Leaves values at padded steps, where PyTorch gives zeros."""

    family: str = "planted-padding"

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        right = super().run(case, weights, inputs)
        output = np.array(right.output)
        output[output == 0] = 0.75
        return GruOutput(output, right.h_n)


@dataclass
class NonFiniteOutput(NumpyGru):
    """Returns one NaN (or inf) in `output` at a valid position: a kernel reading uninitialised memory."""

    family: str = "planted-nan"
    value: float = float("nan")

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        right = super().run(case, weights, inputs)
        output = np.array(right.output)
        output[(0,) * output.ndim] = self.value  # step 0 of item 0 is valid in every case
        return GruOutput(output, right.h_n)


@dataclass
class TinyPadding(NumpyGru):
    """Leaves a value far below any tolerance (1e-12) at padded steps: still not PyTorch's exact zero."""

    family: str = "planted-tiny-padding"

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        right = super().run(case, weights, inputs)
        output = np.array(right.output)
        output[output == 0] = 1e-12
        return GruOutput(output, right.h_n)


@dataclass
class WrongHnDtype(NumpyGru):
    """Returns h_n in float64 whatever the case dtype (a state kept in a wider type and never cast back)."""

    family: str = "planted-hn-dtype"

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        right = super().run(case, weights, inputs)
        return GruOutput(right.output, np.asarray(right.h_n, dtype=np.float64))


@dataclass
class WrongNumbersAndPadding(NumpyGru):
    """r and z swapped AND garbage at padded steps: an arithmetic failure must not be labelled a convention."""

    family: str = "planted-wrong-and-padding"

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        wrong = super().run(case, _rows(weights, _swap_rz), inputs)
        output = np.array(wrong.output)
        output[output == 0] = 0.75
        return GruOutput(output, wrong.h_n)


PLANTED = (SwappedRZ, DroppedBhn, ReverseIgnoresLengths, SwappedHnDirections, GarbageInPadding)


def swapped_rz() -> Iterator[NumpyGru]:
    """A factory for `--backend-module planted_backends:swapped_rz`."""
    yield SwappedRZ()


def _in(dtype: str, values: np.ndarray) -> np.ndarray:
    """Rounded to the case dtype and held in float32, as a kernel storing 16 bits holds it."""
    return quantize(values, dtype).astype(np.float32)


def _dot_rounding_each_step(a: np.ndarray, w: np.ndarray, dtype: str) -> np.ndarray:
    """a @ w.T with the running sum rounded to `dtype` after every multiply-add: a naive 16-bit kernel."""
    total = np.zeros((a.shape[0], w.shape[0]), np.float32)
    for k in range(a.shape[1]):
        total = _in(dtype, total + a[:, k, None] * w[None, :, k])
    return total


@dataclass
class Rounds16(NumpyGru):
    """A correct 16-bit GRU that rounds every tensor it makes to the case dtype, accumulating in float32.

    Written independently of conformance.emulate (its own formula: 1 / (1 + exp(-v)),
    (1 - z) n + z h), so it checks the tolerance, not the emulation against itself.
    """

    family: str = "planted-rounds16"
    dtype: str = "float32"

    def dot(self, a: np.ndarray, w: np.ndarray) -> np.ndarray:
        return _in(self.dtype, a @ w.T)  # float32 accumulation, one rounding of the result

    def cell(self, x, h, w_ih, w_hh, b_ih, b_hh):  # type: ignore[no-untyped-def]
        if self.dtype not in ("bfloat16", "float16"):
            return super().cell(x, h, w_ih, w_hh, b_ih, b_hh)
        d = self.dtype
        gi, gh = _in(d, self.dot(x, w_ih) + b_ih), _in(d, self.dot(h, w_hh) + b_hh)
        i_r, i_z, i_n = np.split(gi, 3, axis=1)
        h_r, h_z, h_n = np.split(gh, 3, axis=1)
        r = _in(d, 1 / _in(d, 1 + _in(d, np.exp(-_in(d, i_r + h_r)))))
        z = _in(d, 1 / _in(d, 1 + _in(d, np.exp(-_in(d, i_z + h_z)))))
        n = _in(d, np.tanh(_in(d, i_n + _in(d, r * h_n))))
        return _in(d, _in(d, _in(d, 1 - z) * n) + _in(d, z * h))

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        self.dtype = case.dtype
        return super().run(case, weights, inputs)


@dataclass
class Accumulates16(Rounds16):
    """Rounds16, but its dot products accumulate in the 16-bit dtype, rounding after every multiply-add."""

    family: str = "planted-accumulate16"

    def dot(self, a: np.ndarray, w: np.ndarray) -> np.ndarray:
        return _dot_rounding_each_step(a, w, self.dtype)
