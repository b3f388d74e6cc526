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
