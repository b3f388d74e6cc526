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


# --- Invariant breakers: each agrees with the oracle on the suite's fixed cases and breaks one invariant. ---
# What makes them invisible to the oracle is always something the matrix's data never varies: a batch
# of one inside a batch-3 case, an h0 of exact zeros, trailing padding after the longest item (the
# data always has an item of full length), an unsorted batch whose longest item is not last.


def _batch_size(case: Case, inputs: Inputs) -> int:
    return int(inputs.x.shape[0 if case.batch_first else 1])


@dataclass
class BatchOfOneDropsBhn(NumpyGru):
    """A batch of one takes an 'unbatched' fast path that forgets b_hn: each item alone differs from its row."""

    family: str = "planted-batch-of-one"

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        if _batch_size(case, inputs) == 1:
            weights = _rows(weights, _drop_b_hn)
        return super().run(case, weights, inputs)


@dataclass
class ZeroH0DropsBhh(NumpyGru):
    """An all-zero h0 is taken for 'no state' and a stateless path drops bias_hh (mlx#3249's mirror image)."""

    family: str = "planted-zero-h0"

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        if inputs.h0 is not None and not np.any(inputs.h0):
            weights = _rows(weights, lambda name, v: v * 0 if name.startswith("bias_hh") else v)
        return super().run(case, weights, inputs)


@dataclass
class TrailingPaddingAdvances(NumpyGru):
    """In a batch of several, steps after the longest item count as valid for it: its state runs on through
    trailing padding. (A batch of one takes another path, so this breaks padding-independence alone.)"""

    family: str = "planted-trailing-padding"

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        if inputs.lengths is not None and _batch_size(case, inputs) > 1:
            steps = int(inputs.x.shape[1 if case.batch_first else 0])
            lengths = np.asarray(inputs.lengths)
            longest = lengths.max()
            inputs = replace(inputs, lengths=np.where(lengths == longest, steps, lengths))
        return super().run(case, weights, inputs)


@dataclass
class StepsFromLastItem(NumpyGru):
    """An unsorted batch runs as many steps as its last item is long (the matrix's unsorted batches end with
    the longest item, so only another order shows it)."""

    family: str = "planted-steps-from-last"

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        if inputs.lengths is not None and not case.enforce_sorted:
            lengths = np.asarray(inputs.lengths)
            inputs = replace(inputs, lengths=np.minimum(lengths, lengths[-1]))
        return super().run(case, weights, inputs)


@dataclass
class CallCounterInOutput(NumpyGru):
    """Adds (calls mod 64) + 1 units in the last place to one output element: far inside the tolerance, yet two
    identical calls never agree. `deterministic` is what it claims."""

    family: str = "planted-call-counter"
    deterministic: bool = True
    calls: int = 0

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        right = super().run(case, weights, inputs)
        self.calls += 1
        output = np.array(right.output)
        first = (0,) * output.ndim
        for _ in range(self.calls % 64 + 1):
            output[first] = np.nextafter(output[first], np.inf, dtype=output.dtype)
        return GruOutput(output, right.h_n)


def batch_of_one() -> Iterator[NumpyGru]:
    """A factory for `--backend-module planted_backends:batch_of_one`."""
    yield BatchOfOneDropsBhn()


INVARIANT_BREAKERS = {
    "batch-independence": BatchOfOneDropsBhn,
    "omitted-h0": ZeroH0DropsBhh,
    "padding-independence": TrailingPaddingAdvances,
    "order-equivariance": StepsFromLastItem,
    "determinism": CallCounterInOutput,
}


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


# --- Zero-length behaviours: what a backend may do with an item of length 0. ---


def _empty_items(inputs: Inputs) -> np.ndarray:
    return np.zeros(0, int) if inputs.lengths is None else np.flatnonzero(np.asarray(inputs.lengths) == 0)


@dataclass
class EmptyItemStateZeroed(NumpyGru):
    """h_n of a length-0 item is zeros whatever h0 was (what onnxruntime's GRU does with Y_h)."""

    family: str = "planted-empty-zeroed"

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        right = super().run(case, weights, inputs)
        h_n = np.array(right.h_n)
        h_n[:, _empty_items(inputs)] = 0
        return GruOutput(right.output, h_n)


@dataclass
class EmptyItemRunsFully(NumpyGru):
    """`length or seq_len`: 0 is falsy, so an empty item runs every step (its h_n and 'padded' outputs move)."""

    family: str = "planted-empty-runs"

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        if inputs.lengths is not None:
            steps = int(inputs.x.shape[1 if case.batch_first else 0])
            lengths = np.asarray(inputs.lengths)
            inputs = replace(inputs, lengths=np.where(lengths == 0, steps, lengths))
        return super().run(case, weights, inputs)


@dataclass
class EmptyItemShiftsOthers(NumpyGru):
    """Drops empty items, runs the rest, and writes their results back to the first slots: the others move."""

    family: str = "planted-empty-shifts"

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        empty = _empty_items(inputs)
        if not len(empty):
            return super().run(case, weights, inputs)
        batch = _batch_size(case, inputs)
        kept = [b for b in range(batch) if b not in set(empty)]
        axis = 0 if case.batch_first else 1
        part = replace(
            inputs,
            x=np.take(inputs.x, kept, axis=axis),
            h0=None if inputs.h0 is None else inputs.h0[:, kept],
            lengths=np.asarray(inputs.lengths)[kept],
        )
        ran = super().run(
            replace(case, batch=len(kept), lengths="full" if len(kept) == 1 else case.lengths), weights, part
        )
        output = np.zeros_like(np.take(ran.output, [0] * batch, axis=axis))
        h_n = np.zeros((ran.h_n.shape[0], batch, ran.h_n.shape[2]), ran.h_n.dtype)
        index = [slice(None)] * output.ndim
        index[axis] = slice(0, len(kept))
        output[tuple(index)] = ran.output
        h_n[:, : len(kept)] = ran.h_n
        return GruOutput(output, h_n)
