"""Wrong GRUs with one known mistake each, for the diagnosis to name.

`LoopGru` is a NumPy GRU written independently of `conformance.forms` (the code the
variants are built from), with one method per place a port goes wrong: the cell, the
weights it reads, the steps that move the state, the padding, how directions are
concatenated, how h_n is stacked, how batch_first is handled. Each planted mistake
overrides exactly one of them, the way a real adapter or converter gets it wrong. It
computes in float32 (float64 for float64 cases) and rounds to the case dtype, like the
example adapter, so a diagnosis must see through real rounding, not compare a variant
with itself.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from example_gru_backend.adapter import NumpyGru

from conformance.case import Case
from conformance.data import GruOutput, Inputs, Weights
from conformance.dtypes import fmt, quantize

Cell = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-v))


@dataclass
class LoopGru(NumpyGru):
    """A correct GRU; subclasses plant one mistake each."""

    family: str = "planted-loop"

    def work_dtype(self, case: Case) -> type:
        return np.float64 if case.dtype == "float64" else np.float32

    # --- the cell and its weights ---------------------------------------------------------
    def cell_weights(self, case: Case, weights: Weights, layer: int, direction: int, work: type) -> Cell:
        w_ih, w_hh, b_ih, b_hh = weights.cell(layer, direction)
        zeros = np.zeros(3 * case.hidden_size)
        return (
            np.asarray(w_ih, dtype=work),
            np.asarray(w_hh, dtype=work),
            np.asarray(zeros if b_ih is None else b_ih, dtype=work),
            np.asarray(zeros if b_hh is None else b_hh, dtype=work),
        )

    def gates(self, x: np.ndarray, h: np.ndarray, cell: Cell) -> tuple[np.ndarray, ...]:
        """(i_r, i_z, i_n, h_r, h_z, h_n): input and recurrent pre-activations, biases included."""
        w_ih, w_hh, b_ih, b_hh = cell
        i_r, i_z, i_n = np.split(x @ w_ih.T + b_ih, 3, axis=1)
        h_r, h_z, h_n = np.split(h @ w_hh.T + b_hh, 3, axis=1)
        return i_r, i_z, i_n, h_r, h_z, h_n

    def step(self, x: np.ndarray, h: np.ndarray, cell: Cell) -> np.ndarray:
        i_r, i_z, i_n, h_r, h_z, h_n = self.gates(x, h, cell)
        r, z = _sigmoid(i_r + h_r), _sigmoid(i_z + h_z)
        n = np.tanh(i_n + r * h_n)
        return (1 - z) * n + z * h

    # --- state, lengths and padding ------------------------------------------------------
    def initial_state(self, case: Case, inputs: Inputs, batch: int, work: type) -> np.ndarray:
        if inputs.h0 is None:
            return np.zeros((case.num_layers * case.num_directions, batch, case.hidden_size), work)
        return np.asarray(inputs.h0, dtype=work)

    def lengths(self, case: Case, inputs: Inputs, steps: int, batch: int) -> np.ndarray:
        return np.full(batch, steps) if inputs.lengths is None else np.asarray(inputs.lengths)

    def moves_state(self, t: int, lengths: np.ndarray, direction: int) -> np.ndarray:
        """(B,) which items' state steps at time t."""
        return t < lengths

    def shows_output(self, t: int, lengths: np.ndarray) -> np.ndarray:
        """(B,) which items' output at time t is the state (else zero)."""
        return t < lengths

    def final_state(self, outputs: np.ndarray, h: np.ndarray) -> np.ndarray:
        return h

    # --- layout --------------------------------------------------------------------------
    def to_time_major(self, case: Case, x: np.ndarray) -> np.ndarray:
        return x.transpose(1, 0, 2) if case.batch_first else x

    def from_time_major(self, case: Case, output: np.ndarray) -> np.ndarray:
        return output.transpose(1, 0, 2) if case.batch_first else output

    def join_directions(self, outs: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(outs, axis=2)

    def stack_h_n(self, case: Case, finals: list[np.ndarray]) -> np.ndarray:
        """`finals` arrive layer by layer, forward then backward within a layer."""
        return np.stack(finals)

    def restore_order(self, case: Case, inputs: Inputs, output: np.ndarray, h_n: np.ndarray) -> GruOutput:
        return GruOutput(output, h_n)

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        work = self.work_dtype(case)
        x = self.to_time_major(case, np.asarray(inputs.x, dtype=work))
        steps, batch = x.shape[0], x.shape[1]
        lengths = self.lengths(case, inputs, steps, batch)
        h0 = self.initial_state(case, inputs, batch, work)
        layer_in, finals = x, []
        for layer in range(case.num_layers):
            outs = []
            for direction in range(case.num_directions):
                cell = self.cell_weights(case, weights, layer, direction, work)
                h = h0[layer * case.num_directions + direction]
                out: np.ndarray = np.zeros((steps, batch, case.hidden_size), work)
                for t in reversed(range(steps)) if direction else range(steps):
                    h = np.where(self.moves_state(t, lengths, direction)[:, None], self.step(layer_in[t], h, cell), h)
                    out[t] = np.where(self.shows_output(t, lengths)[:, None], h, 0)
                outs.append(out)
                finals.append(self.final_state(out, h))
            layer_in = self.join_directions(outs)
        target = fmt(case.dtype).numpy
        result = self.restore_order(case, inputs, self.from_time_major(case, layer_in), self.stack_h_n(case, finals))
        return GruOutput(
            np.ascontiguousarray(result.output).astype(target), np.ascontiguousarray(result.h_n).astype(target)
        )


# --- the equations ------------------------------------------------------------------------


@dataclass
class ResetBeforeMatmul(LoopGru):
    """n = tanh(W_in x + b_in + W_hn (r*h) + b_hn): ONNX's default form, ported as if it were torch's."""

    family: str = "planted-reset-before-matmul"

    def step(self, x: np.ndarray, h: np.ndarray, cell: Cell) -> np.ndarray:
        _, w_hh, _, b_hh = cell
        hidden = h.shape[1]
        i_r, i_z, i_n, h_r, h_z, _ = self.gates(x, h, cell)
        r, z = _sigmoid(i_r + h_r), _sigmoid(i_z + h_z)
        n = np.tanh(i_n + (r * h) @ w_hh[2 * hidden :].T + b_hh[2 * hidden :])
        return (1 - z) * n + z * h


@dataclass
class UpdateSwapped(LoopGru):
    """h' = z*n + (1-z)*h: the other update-gate convention (some papers, some hand-written cells)."""

    family: str = "planted-update-swapped"

    def step(self, x: np.ndarray, h: np.ndarray, cell: Cell) -> np.ndarray:
        i_r, i_z, i_n, h_r, h_z, h_n = self.gates(x, h, cell)
        r, z = _sigmoid(i_r + h_r), _sigmoid(i_z + h_z)
        return z * np.tanh(i_n + r * h_n) + (1 - z) * h


@dataclass
class KerasGateOrder(LoopGru):
    """Slices the pre-activations as (z, r, n), Keras's and ONNX's order, on torch's (r, z, n) weights."""

    family: str = "planted-keras-gate-order"

    def gates(self, x: np.ndarray, h: np.ndarray, cell: Cell) -> tuple[np.ndarray, ...]:
        w_ih, w_hh, b_ih, b_hh = cell
        i_z, i_r, i_n = np.split(x @ w_ih.T + b_ih, 3, axis=1)
        h_z, h_r, h_n = np.split(h @ w_hh.T + b_hh, 3, axis=1)
        return i_r, i_z, i_n, h_r, h_z, h_n


@dataclass
class CandidateFirstGateOrder(LoopGru):
    """Slices the pre-activations as (n, r, z): a port from a framework that stores the candidate first."""

    family: str = "planted-nrz-gate-order"

    def gates(self, x: np.ndarray, h: np.ndarray, cell: Cell) -> tuple[np.ndarray, ...]:
        w_ih, w_hh, b_ih, b_hh = cell
        i_n, i_r, i_z = np.split(x @ w_ih.T + b_ih, 3, axis=1)
        h_n, h_r, h_z = np.split(h @ w_hh.T + b_hh, 3, axis=1)
        return i_r, i_z, i_n, h_r, h_z, h_n


@dataclass
class BhnOutsideReset(LoopGru):
    """n = tanh(W_in x + b_in + b_hn + r*(W_hn h)): b_hn folded into the input bias by a converter."""

    family: str = "planted-bhn-outside"

    def step(self, x: np.ndarray, h: np.ndarray, cell: Cell) -> np.ndarray:
        w_ih, w_hh, b_ih, b_hh = cell
        hidden = h.shape[1]
        folded = b_ih.copy()
        folded[2 * hidden :] += b_hh[2 * hidden :]
        recurrent = b_hh.copy()
        recurrent[2 * hidden :] = 0
        i_r, i_z, i_n, h_r, h_z, h_n = self.gates(x, h, (w_ih, w_hh, folded, recurrent))
        r, z = _sigmoid(i_r + h_r), _sigmoid(i_z + h_z)
        return (1 - z) * np.tanh(i_n + r * h_n) + z * h


@dataclass
class NoRecurrentBias(LoopGru):
    """Loads bias_ih only: the target layer has a single bias vector."""

    family: str = "planted-no-recurrent-bias"

    def cell_weights(self, case: Case, weights: Weights, layer: int, direction: int, work: type) -> Cell:
        w_ih, w_hh, b_ih, b_hh = super().cell_weights(case, weights, layer, direction, work)
        return w_ih, w_hh, b_ih, np.zeros_like(b_hh)


# --- layout -------------------------------------------------------------------------------


@dataclass
class HnDirectionMajor(LoopGru):
    """Stacks h_n as all forward layers, then all backward ones."""

    family: str = "planted-hn-direction-major"

    def stack_h_n(self, case: Case, finals: list[np.ndarray]) -> np.ndarray:
        forward, backward = finals[0::2], finals[1::2]
        return np.stack(forward + backward) if case.bidirectional else np.stack(finals)


@dataclass
class BackwardFirstConcat(LoopGru):
    """Concatenates (backward, forward) in every layer."""

    family: str = "planted-backward-first"

    def join_directions(self, outs: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(outs[::-1], axis=2)


@dataclass
class BatchFirstByReshape(LoopGru):
    """`x.reshape(T, B, I)` instead of a transpose, and the same on the way out."""

    family: str = "planted-batch-first-reshape"

    def to_time_major(self, case: Case, x: np.ndarray) -> np.ndarray:
        return x.reshape(x.shape[1], x.shape[0], x.shape[2]) if case.batch_first else x

    def from_time_major(self, case: Case, output: np.ndarray) -> np.ndarray:
        return output.reshape(output.shape[1], output.shape[0], output.shape[2]) if case.batch_first else output


@dataclass
class OutputLeftTimeMajor(LoopGru):
    """Honours batch_first on the way in but returns the output time-major, (T, B, D*H)."""

    family: str = "planted-output-time-major"

    def from_time_major(self, case: Case, output: np.ndarray) -> np.ndarray:
        return output


# --- state --------------------------------------------------------------------------------


@dataclass
class IgnoresH0(LoopGru):
    """Always starts from zeros."""

    family: str = "planted-ignores-h0"

    def initial_state(self, case: Case, inputs: Inputs, batch: int, work: type) -> np.ndarray:
        return np.zeros((case.num_layers * case.num_directions, batch, case.hidden_size), work)


@dataclass
class StateThroughPadding(LoopGru):
    """Masks the output with the lengths but lets the state step through padding (both directions)."""

    family: str = "planted-state-through-padding"

    def moves_state(self, t: int, lengths: np.ndarray, direction: int) -> np.ndarray:
        return np.ones(lengths.shape, bool)


@dataclass
class IgnoresLengths(LoopGru):
    """Runs every item over the whole padded sequence, as a dense batch."""

    family: str = "planted-ignores-lengths"

    def lengths(self, case: Case, inputs: Inputs, steps: int, batch: int) -> np.ndarray:
        return np.full(batch, steps)


@dataclass
class SortedLengthsOnUnsortedBatch(LoopGru):
    """Sorts the lengths for packing but not the batch: item i gets the i-th largest length."""

    family: str = "planted-sorted-lengths"

    def lengths(self, case: Case, inputs: Inputs, steps: int, batch: int) -> np.ndarray:
        own = super().lengths(case, inputs, steps, batch)
        return -np.sort(-own)


@dataclass
class NeverUnsorts(LoopGru):
    """Sorts an unsorted batch by length to pack it and returns the results in that sorted order."""

    family: str = "planted-never-unsorts"

    def restore_order(self, case: Case, inputs: Inputs, output: np.ndarray, h_n: np.ndarray) -> GruOutput:
        if inputs.lengths is None:
            return GruOutput(output, h_n)
        by_length = sorted(range(len(inputs.lengths)), key=lambda i: -int(inputs.lengths[i]))  # type: ignore[index]
        batch_axis = 0 if case.batch_first else 1
        return GruOutput(np.take(output, by_length, axis=batch_axis), h_n[:, by_length])


@dataclass
class HnFromLastStep(LoopGru):
    """Returns output[-1] (each direction's output at the last time step) as h_n."""

    family: str = "planted-hn-last-step"

    def final_state(self, outputs: np.ndarray, h: np.ndarray) -> np.ndarray:
        return outputs[-1]


# --- precision ----------------------------------------------------------------------------


@dataclass
class Float32Everywhere(LoopGru):
    """Computes every case in float32, float64 ones included, and returns the claimed dtype."""

    family: str = "planted-float32-everywhere"

    def work_dtype(self, case: Case) -> type:
        return np.float32


def _bf16(values: np.ndarray) -> np.ndarray:
    return quantize(values, "bfloat16").astype(np.float32)


@dataclass
class Bfloat16Inside(LoopGru):
    """Casts weights and inputs to bfloat16 and keeps every activation in bfloat16 (float32 accumulation)."""

    family: str = "planted-bfloat16-inside"

    def cell_weights(self, case: Case, weights: Weights, layer: int, direction: int, work: type) -> Cell:
        w_ih, w_hh, b_ih, b_hh = super().cell_weights(case, weights, layer, direction, work)
        return _bf16(w_ih), _bf16(w_hh), _bf16(b_ih), _bf16(b_hh)

    def step(self, x: np.ndarray, h: np.ndarray, cell: Cell) -> np.ndarray:
        i_r, i_z, i_n, h_r, h_z, h_n = (_bf16(g) for g in self.gates(_bf16(x), h, cell))
        r, z = _bf16(_sigmoid(i_r + h_r)), _bf16(_sigmoid(i_z + h_z))
        n = _bf16(np.tanh(i_n + _bf16(r * h_n)))
        return _bf16((1 - z) * n + z * h)


def _tf32(values: np.ndarray) -> np.ndarray:
    """float32 rounded to 11 significant bits (nearest-even), as a tensor core reads a matmul operand."""
    bits = np.asarray(values, dtype=np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0xFFF) + ((bits >> np.uint32(13)) & np.uint32(1))) & np.uint32(0xFFFFE000)
    return rounded.view(np.float32)


@dataclass
class Tf32Matmuls(LoopGru):
    """float32 everywhere, but every matmul reads its operands in TF32 (a GPU's default)."""

    family: str = "planted-tf32-matmuls"

    def gates(self, x: np.ndarray, h: np.ndarray, cell: Cell) -> tuple[np.ndarray, ...]:
        w_ih, w_hh, b_ih, b_hh = cell
        i_r, i_z, i_n = np.split(_tf32(x) @ _tf32(w_ih).T + b_ih, 3, axis=1)
        h_r, h_z, h_n = np.split(_tf32(h) @ _tf32(w_hh).T + b_hh, 3, axis=1)
        return i_r, i_z, i_n, h_r, h_z, h_n


# --- correct, with other rounding ----------------------------------------------------------


@dataclass
class FusedGateMatmul(LoopGru):
    """Correct: one float32 matmul of [x, h] against the stacked r and z weights, as fused kernels do."""

    family: str = "planted-fused-matmul"

    def step(self, x: np.ndarray, h: np.ndarray, cell: Cell) -> np.ndarray:
        w_ih, w_hh, b_ih, b_hh = cell
        hidden = h.shape[1]
        fused = np.concatenate([w_ih[: 2 * hidden], w_hh[: 2 * hidden]], axis=1)  # (2H, I+H)
        rz = np.concatenate([x, h], axis=1) @ fused.T + (b_ih[: 2 * hidden] + b_hh[: 2 * hidden])
        r, z = _sigmoid(rz[:, :hidden]), _sigmoid(rz[:, hidden:])
        i_n = x @ w_ih[2 * hidden :].T + b_ih[2 * hidden :]
        h_n = h @ w_hh[2 * hidden :].T + b_hh[2 * hidden :]
        return (1 - z) * np.tanh(i_n + r * h_n) + z * h


@dataclass
class Float64ThenRounded(LoopGru):
    """Correct: computes in float64 whatever the case dtype and rounds the results once."""

    family: str = "planted-float64-rounded"

    def work_dtype(self, case: Case) -> type:
        return np.float64


# --- mistakes on one code path, for failure patterns -----------------------------------------


@dataclass
class GateOrderOnOnePath(CandidateFirstGateOrder):
    """The (n, r, z) gate order, but only where `affected(case)`: a mistake confined to one code path.

    (n, r, z) rather than Keras's order because it shows on every pairwise case; a swap of r
    and z hides inside bfloat16's tolerance on a one-step case with no state.
    """

    family: str = "planted-gate-order-on-one-path"

    def affected(self, case: Case) -> bool:
        return True

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        return super().run(case, weights, inputs) if self.affected(case) else LoopGru().run(case, weights, inputs)


@dataclass
class WrongWhenBidirectional(GateOrderOnOnePath):
    family: str = "planted-wrong-when-bidirectional"

    def affected(self, case: Case) -> bool:
        return case.bidirectional


@dataclass
class WrongWhenBfloat16AndPacked(GateOrderOnOnePath):
    family: str = "planted-wrong-when-bfloat16-packed"

    def affected(self, case: Case) -> bool:
        return case.dtype == "bfloat16" and case.packed


@dataclass
class WrongWhenBatchFirstAndPacked(GateOrderOnOnePath):
    family: str = "planted-wrong-when-batch-first-packed"

    def affected(self, case: Case) -> bool:
        return case.batch_first and case.packed


@dataclass
class WrongAtRandom(GateOrderOnOnePath):
    """Wrong on the cases whose id hashes to an even number: no condition on the fields explains it."""

    family: str = "planted-wrong-at-random"

    def affected(self, case: Case) -> bool:
        return zlib.crc32(case.id.encode()) % 2 == 0


MISTAKES: dict[type[LoopGru], str] = {
    ResetBeforeMatmul: "reset-before-matmul",
    UpdateSwapped: "update-gate-swapped",
    KerasGateOrder: "gate-order-zrn",
    CandidateFirstGateOrder: "gate-order-nrz",
    BhnOutsideReset: "bias-hn-outside-reset",
    NoRecurrentBias: "recurrent-biases-dropped",
    HnDirectionMajor: "h-n-direction-major",
    BackwardFirstConcat: "directions-concatenated-reversed",
    BatchFirstByReshape: "batch-first-by-reshape",
    IgnoresH0: "h0-ignored",
    StateThroughPadding: "padding-advances-state",
    IgnoresLengths: "lengths-ignored",
    SortedLengthsOnUnsortedBatch: "lengths-in-sorted-order",
    NeverUnsorts: "results-in-sorted-order",
    HnFromLastStep: "h-n-from-last-output",
    OutputLeftTimeMajor: "batch-first-output-time-major",
}
"""Each planted mistake and the variant that must name it."""
