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
from conformance.contract import Refusal, UnsupportedCase, refusal_reason
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


# -- Backends with narrow or declared support: what each backend's own coverage must handle ----------


def narrow_refusal(case: Case) -> str | None:
    """One layer, one direction, no packing, float32: the support of many a third-party GRU."""
    if case.num_layers != 1 or case.bidirectional or case.packed or case.dtype != "float32":
        return "planted narrow GRU: one layer, one direction, dense input, float32 only"
    return None


@dataclass
class NarrowGru(NumpyGru):
    """A correct GRU that supports little: on the shared pairwise tier alone it checks nothing."""

    family: str = "planted-narrow"

    def supports(self, case: Case) -> str | None:
        return narrow_refusal(case)


@dataclass
class NarrowIgnoresH0WhenBatchFirst(NarrowGru):
    """Narrow, and starts from zeros instead of h0 when the input is batch-first (a layout branch that
    forgot the initial state): wrong only where batch_first and initial_state meet, a pair of its own space."""

    family: str = "planted-narrow-h0"

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        if case.batch_first and inputs.h0 is not None:
            inputs = replace(inputs, h0=None)
        return super().run(case, weights, inputs)


@dataclass
class SupportsNothing(NumpyGru):
    """Refuses every case of the matrix: a run that selects it must not end green."""

    family: str = "planted-nothing"

    def supports(self, case: Case) -> str | None:
        return "planted: supports no case at all"


@dataclass
class RefusesWhenRun(NumpyGru):
    """Admits every case in `supports`, then refuses all but dense float32 when run: the refusals only a run
    reveals, which leave its own space uncovered (and, on a tier without such a case, nothing checked)."""

    family: str = "planted-refuses-when-run"

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        if case.packed or case.dtype != "float32":
            raise UnsupportedCase("planted library: RuntimeError: only dense float32 input is implemented")
        return super().run(case, weights, inputs)


FLOAT64 = Refusal("planted-no-float64", "planted library: TypeError: float64 is not implemented")
PACKED = Refusal("planted-no-packed", "planted library: ValueError: packed sequences are not implemented")


@dataclass
class DeclaresRefusals(NumpyGru):
    """Declares float64 and packed input unsupported (`StaticCapabilities`) and really refuses them when run."""

    family: str = "planted-declares"

    def refusals(self, case: Case) -> tuple[Refusal, ...]:
        return ((FLOAT64,) if case.dtype == "float64" else ()) + ((PACKED,) if case.packed else ())

    def supports(self, case: Case) -> str | None:
        return refusal_reason(self.refusals(case))

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        found = self.refusals(case)
        if found:
            raise UnsupportedCase(found[0].reason)
        return super().run(case, weights, inputs)


@dataclass
class StaleDeclaration(DeclaresRefusals):
    """Declares float64 unsupported but runs it correctly: the declaration has rotted (`unexpected_support`)."""

    family: str = "planted-stale-declaration"

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        if case.packed:
            raise UnsupportedCase(PACKED.reason)
        return NumpyGru.run(self, case, weights, inputs)


def narrow() -> Iterator[NumpyGru]:
    """`--backend-module planted_backends:narrow`."""
    yield NarrowGru()


def narrow_h0() -> Iterator[NumpyGru]:
    yield NarrowIgnoresH0WhenBatchFirst()


def nothing() -> Iterator[NumpyGru]:
    yield SupportsNothing()


def refuses_when_run() -> Iterator[NumpyGru]:
    yield RefusesWhenRun()


def declares() -> Iterator[NumpyGru]:
    yield DeclaresRefusals()


def stale_declaration() -> Iterator[NumpyGru]:
    yield StaleDeclaration()
