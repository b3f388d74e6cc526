"""The float64 reference: PyTorch's documented `nn.GRU` semantics, in NumPy.

    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))        # linear_before_reset=True (torch)
    n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)        # linear_before_reset=False (ONNX default, Keras reset_after=False)
    h' = (1 - z) * n + z * h

Packed batches follow `pack_padded_sequence` + `pad_packed_sequence(total_length=seq_len)`:
each item only sees its first `length` steps, the reverse direction starts at the
item's last valid step, padded outputs are zero and h_n is the state at the last
valid step. Every backend is compared against this one function.

Zero-length items (the `zero` lengths kind) are a policy, since no two libraries agree
(PyTorch refuses them, onnxruntime zeroes Y_h, TensorFlow returns the initial state,
the ONNX spec says nothing): an item of length 0 runs no step, so every output of it is
zero and its h_n is its h0 (zero when h0 is omitted). The recurrence below gives exactly
that, with no special case: the item is never valid, so its state never moves.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from conformance.case import Case
from conformance.data import GruOutput, Inputs, Weights


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * v))  # overflow-free and exact to float64 rounding


class Arithmetic:
    """Where a GRU step's operations round. This one, the oracle's, is plain float64.

    The GRU formula is written once (`_step`) in terms of these hooks, so a precision
    emulation (`conformance.emulate`) overrides where values round and can never drift
    from the oracle's semantics; with these float64 hooks every operation is the one the
    oracle has always done, in the same order, so its results stay bit for bit the same.
    """

    def project(self, xs: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Every step's input projection at once: xs @ w.T + b."""
        return xs @ w.T + b

    def preactivation(self, i: np.ndarray, a: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
        """A gate's pre-activation i + a @ w.T + b (i: the input projection's part)."""
        return i + a @ w.T + b

    def linear(self, a: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a @ w.T + b

    def add(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a + b

    def mul(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a * b

    def sigmoid(self, v: np.ndarray) -> np.ndarray:
        return _sigmoid(v)

    def tanh(self, v: np.ndarray) -> np.ndarray:
        return np.tanh(v)

    def update(self, z: np.ndarray, n: np.ndarray, h: np.ndarray) -> np.ndarray:
        """The new state (1 - z) * n + z * h."""
        return (1.0 - z) * n + z * h


FLOAT64 = Arithmetic()


def _step(
    gi: np.ndarray,
    h: np.ndarray,
    w_hh: np.ndarray,
    b_hh: np.ndarray,
    linear_before_reset: bool,
    a: Arithmetic,
) -> np.ndarray:
    """One GRU step from the input projection gi (B,3H) and the state h (B,H); returns the new state."""
    hidden = w_hh.shape[1]
    i_r, i_z, i_n = gi[:, :hidden], gi[:, hidden : 2 * hidden], gi[:, 2 * hidden :]
    w_hr, w_hz, w_hn = w_hh[:hidden], w_hh[hidden : 2 * hidden], w_hh[2 * hidden :]
    b_hr, b_hz, b_hn = b_hh[:hidden], b_hh[hidden : 2 * hidden], b_hh[2 * hidden :]
    r = a.sigmoid(a.preactivation(i_r, h, w_hr, b_hr))
    z = a.sigmoid(a.preactivation(i_z, h, w_hz, b_hz))
    if linear_before_reset:
        n = a.tanh(a.add(i_n, a.mul(r, a.linear(h, w_hn, b_hn))))
    else:
        n = a.tanh(a.preactivation(i_n, a.mul(r, h), w_hn, b_hn))
    return a.update(z, n, h)


def _direction(
    xs: np.ndarray,
    h: np.ndarray,
    valid: np.ndarray,
    cell: tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None],
    reverse: bool,
    linear_before_reset: bool,
    noise: np.ndarray | None = None,
    arithmetic: Arithmetic = FLOAT64,
) -> tuple[np.ndarray, np.ndarray]:
    """One layer, one direction over time-major xs (T,B,I); returns (outputs (T,B,H), h_n (B,H))."""
    w_ih, w_hh = np.asarray(cell[0], dtype=np.float64), np.asarray(cell[1], dtype=np.float64)
    hidden = w_hh.shape[1]
    b_ih, b_hh = (np.zeros(3 * hidden) if b is None else np.asarray(b, dtype=np.float64) for b in cell[2:])
    gi_all = arithmetic.project(xs, w_ih, b_ih)  # (T,B,3H): input projections of every step at once
    out = np.zeros((xs.shape[0], xs.shape[1], hidden))
    steps = range(xs.shape[0] - 1, -1, -1) if reverse else range(xs.shape[0])
    for t in steps:
        h_new = _step(gi_all[t], h, w_hh, b_hh, linear_before_reset, arithmetic)
        if noise is not None:
            h_new = h_new + noise[t]
        mask = valid[t][:, None]
        h = np.where(mask, h_new, h)
        out[t] = np.where(mask, h, 0.0)
    return out, h


def gru_reference(
    case: Case,
    weights: Weights,
    inputs: Inputs,
    linear_before_reset: bool = True,
    step_noise: Sequence[np.ndarray] | None = None,
    arithmetic: Arithmetic = FLOAT64,
) -> GruOutput:
    """The expected output and h_n of `case`, in float64 and PyTorch's layout.

    `linear_before_reset=False` gives the other published GRU form; it is never the
    truth for a backend that claims PyTorch semantics, but lets a divergence be named.
    `step_noise[layer * D + direction]` (T,B,H), added to each new state, is how the
    tolerance measures how this case's recurrence carries a rounding error forward.
    `arithmetic` decides where operations round: float64 here, a kernel's precision in
    `conformance.emulate`, which is how the tolerance measures a correct kernel's error.
    """
    x = np.asarray(inputs.x, dtype=np.float64)
    if case.batch_first:
        x = x.transpose(1, 0, 2)
    steps, batch = x.shape[0], x.shape[1]
    lengths = np.full(batch, steps) if inputs.lengths is None else np.asarray(inputs.lengths)
    valid = np.arange(steps)[:, None] < lengths[None, :]  # (T,B)
    h0 = (
        np.zeros((case.num_layers * case.num_directions, batch, case.hidden_size))
        if inputs.h0 is None
        else np.asarray(inputs.h0, dtype=np.float64)
    )
    layer_input, h_n = x, []
    for layer in range(case.num_layers):
        outs = []
        for direction in range(case.num_directions):
            index = layer * case.num_directions + direction
            out, h_last = _direction(
                layer_input,
                h0[index],
                valid,
                weights.cell(layer, direction),
                bool(direction),
                linear_before_reset,
                None if step_noise is None else step_noise[index],
                arithmetic,
            )
            outs.append(out)
            h_n.append(h_last)
        layer_input = np.concatenate(outs, axis=2)
    output = layer_input.transpose(1, 0, 2) if case.batch_first else layer_input
    return GruOutput(output=np.ascontiguousarray(output), h_n=np.stack(h_n))
