"""The oracle's GRU, generalised: every way a GRU can compute differently is one parameter.

Diagnosis needs GRUs that are wrong in known ways (the other published form, state
advanced through padding, ...) and GRUs that round like a lower precision. Copying the
oracle once per mistake would let the copies drift from it; instead this module runs
the oracle's own recurrence with a `Form` (what is computed) and an `Arithmetic` (how it
rounds). `Form()` with `EXACT` arithmetic is the oracle, bit for bit (tests check it),
so each variant differs from the truth by exactly the parameter it names.

This module never decides a verdict: `conformance/oracle.py` stays the one truth.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from conformance.case import Case
from conformance.data import GruOutput, Inputs, Weights
from conformance.dtypes import quantize
from conformance.records import PYTORCH_FORM

Rounding = Callable[[np.ndarray], np.ndarray]


def _exact(values: np.ndarray) -> np.ndarray:
    return values


def round_to_format(name: str) -> Rounding:
    """Round float64 values to a named format (conformance.dtypes) and back to float64."""

    def rounding(values: np.ndarray) -> np.ndarray:
        return quantize(values, name).astype(np.float64)

    return rounding


def round_to_bits(significant_bits: int) -> Rounding:
    """Round to `significant_bits` of significand (implicit bit included), nearest-even; range unlimited.

    TF32 is float32's range with 11 significant bits; rounding a float32 value this
    way is what a tensor core does to a matmul operand.
    """
    scale = float(2**significant_bits)

    def rounding(values: np.ndarray) -> np.ndarray:
        mantissa, exponent = np.frexp(np.asarray(values, dtype=np.float64))
        return np.ldexp(np.round(mantissa * scale) / scale, exponent)

    return rounding


@dataclass(frozen=True)
class Arithmetic:
    """How an implementation rounds: `store` after every operation, `operand` on what enters a matmul.

    A matmul's result is stored (rounded by `store`) once, as a kernel accumulating in a
    wider format would; its operands are rounded by `operand` first (TF32 tensor cores).
    """

    name: str
    store: Rounding = _exact
    operand: Rounding = _exact

    def matmul(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.store(self.operand(a) @ self.operand(b))


EXACT = Arithmetic("float64")


@dataclass(frozen=True)
class Activation:
    """An activation as ONNX's GRU names it (`activations`, `activation_alpha`, `activation_beta`).

    Sigmoid and Tanh take no parameters; HardSigmoid is max(0, min(1, alpha * x + beta)), whose
    parameters differ between libraries (ONNX's defaults alpha=0.2, beta=0.5; Keras 3's
    `hard_sigmoid` is relu6(x + 3) / 6, i.e. alpha=1/6, beta=0.5).
    """

    name: str = "Sigmoid"
    alpha: float | None = None
    beta: float | None = None

    def __call__(self, v: np.ndarray) -> np.ndarray:
        if self.name == "Sigmoid":
            return _sigmoid(v)
        if self.name == "Tanh":
            return np.tanh(v)
        if self.name == "HardSigmoid":
            alpha = 0.2 if self.alpha is None else self.alpha
            beta = 0.5 if self.beta is None else self.beta
            return np.clip(alpha * v + beta, 0.0, 1.0)
        raise ValueError(f"activation {self.name!r} is not modelled; known: Sigmoid, Tanh, HardSigmoid")

    def describe(self) -> str:
        params = [f"{k}={v:.4g}" for k, v in (("alpha", self.alpha), ("beta", self.beta)) if v is not None]
        return self.name + (f"({', '.join(params)})" if params else "")


SIGMOID = Activation("Sigmoid")
TANH = Activation("Tanh")


@dataclass(frozen=True)
class Form:
    """What a GRU computes. The defaults are PyTorch's documented GRU, i.e. the oracle.

    linear_before_reset: n = tanh(W_in x + b_in + r * (W_hn h + b_hn)) (True, torch) or
        n = tanh(W_in x + b_in + W_hn (r * h) + b_hn) (False, ONNX's default, Keras reset_after=False).
    bias_hn_outside_reset: n = tanh(W_in x + b_in + r * (W_hn h) + b_hn).
    update_swapped: h' = z * n + (1 - z) * h instead of (1 - z) * n + z * h.
    advance_through_padding: per direction (forward, reverse), whether the state keeps
        stepping over padded steps (the reverse direction then starts at the padded end).
    zero_padding: whether padded output positions are zeros (torch) or hold the state.
    directions_reversed: concatenate (backward, forward) instead of (forward, backward),
        in every layer (so deeper layers see the swapped order too).
    h_n_from_last_output: h_n is each direction's output at the last time step, as if
        `output[-1]` were the final state.
    arithmetic: how values are rounded (EXACT: float64, the oracle's).
    gate_activation, candidate_activation: ONNX's `activations` f (r and z) and g (the candidate);
        Sigmoid and Tanh are everyone's default.
    clip: ONNX's `clip`, a bound applied to the input of every activation ([-clip, clip]); None: none.
    """

    linear_before_reset: bool = True
    bias_hn_outside_reset: bool = False
    update_swapped: bool = False
    advance_through_padding: tuple[bool, bool] = (False, False)
    zero_padding: bool = True
    directions_reversed: bool = False
    h_n_from_last_output: bool = False
    arithmetic: Arithmetic = field(default=EXACT)
    gate_activation: Activation = SIGMOID
    candidate_activation: Activation = TANH
    clip: float | None = None

    def describe(self) -> str:
        """The form as a report names it, after ONNX's attributes: what differs from PyTorch's GRU."""
        text = (
            PYTORCH_FORM
            if self.linear_before_reset
            else "linear_before_reset=0 (reset gate before the recurrent matmul)"
        )
        if (self.gate_activation, self.candidate_activation) != (SIGMOID, TANH):
            text += f", activations={self.gate_activation.describe()}/{self.candidate_activation.describe()}"
        if self.clip is not None:
            text += f", clip={self.clip:g}"
        return text


PYTORCH = Form()  # the oracle's own form: what every backend implements unless it declares another


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * v))  # the oracle's formula, so Form() matches it bit for bit


def _direction(
    xs: np.ndarray,
    h: np.ndarray,
    valid: np.ndarray,
    cell: tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None],
    reverse: bool,
    form: Form,
) -> tuple[np.ndarray, np.ndarray]:
    """One layer, one direction over time-major xs (T,B,I): (outputs (T,B,H), h_n (B,H)).

    The arithmetic is grouped exactly as in `conformance.oracle._direction`.
    """
    q, mm = form.arithmetic.store, form.arithmetic.matmul
    w_ih, w_hh = q(np.asarray(cell[0], dtype=np.float64)), q(np.asarray(cell[1], dtype=np.float64))
    hidden = w_hh.shape[1]
    b_ih, b_hh = (np.zeros(3 * hidden) if b is None else q(np.asarray(b, dtype=np.float64)) for b in cell[2:])
    gi_all = q(mm(xs, w_ih.T) + b_ih)
    out = np.zeros((xs.shape[0], xs.shape[1], hidden))
    advance = form.advance_through_padding[1 if reverse else 0]
    w_hr, w_hz, w_hn = w_hh[:hidden], w_hh[hidden : 2 * hidden], w_hh[2 * hidden :]
    b_hr, b_hz, b_hn = b_hh[:hidden], b_hh[hidden : 2 * hidden], b_hh[2 * hidden :]
    f, g = form.gate_activation, form.candidate_activation
    bound = form.clip

    def clip(v: np.ndarray) -> np.ndarray:
        return v if bound is None else np.clip(v, -bound, bound)

    steps = range(xs.shape[0] - 1, -1, -1) if reverse else range(xs.shape[0])
    for t in steps:
        gi = gi_all[t]
        i_r, i_z, i_n = gi[:, :hidden], gi[:, hidden : 2 * hidden], gi[:, 2 * hidden :]
        r = q(f(clip(q(q(i_r + mm(h, w_hr.T)) + b_hr))))
        z = q(f(clip(q(q(i_z + mm(h, w_hz.T)) + b_hz))))
        if not form.linear_before_reset:
            n = q(g(clip(q(q(i_n + mm(q(r * h), w_hn.T)) + b_hn))))
        elif form.bias_hn_outside_reset:
            n = q(g(clip(q(q(i_n + q(r * mm(h, w_hn.T))) + b_hn))))
        else:
            n = q(g(clip(q(i_n + q(r * q(mm(h, w_hn.T) + b_hn))))))
        if form.update_swapped:
            h_new = q(q(z * n) + q(q(1.0 - z) * h))
        else:
            h_new = q(q(q(1.0 - z) * n) + q(z * h))
        mask = valid[t][:, None]
        h = h_new if advance else np.where(mask, h_new, h)
        out[t] = np.where(mask, h, 0.0) if form.zero_padding else h
    if form.h_n_from_last_output:
        return out, out[-1]
    return out, h


def gru(case: Case, weights: Weights, inputs: Inputs, form: Form = Form()) -> GruOutput:
    """The output and h_n of `case` computed the way `form` says, in float64 and PyTorch's layout.

    Shapes follow the arrays given (x's batch and time axes), not the case's declared sizes,
    so a layout variant can hand in a reshaped x.
    """
    q = form.arithmetic.store
    x = q(np.asarray(inputs.x, dtype=np.float64))
    if case.batch_first:
        x = x.transpose(1, 0, 2)
    steps, batch = x.shape[0], x.shape[1]
    lengths = np.full(batch, steps) if inputs.lengths is None else np.asarray(inputs.lengths)
    valid = np.arange(steps)[:, None] < lengths[None, :]  # (T,B)
    h0 = (
        np.zeros((case.num_layers * case.num_directions, batch, case.hidden_size))
        if inputs.h0 is None
        else q(np.asarray(inputs.h0, dtype=np.float64))
    )
    layer_input, h_n = x, []
    for layer in range(case.num_layers):
        outs = []
        for direction in range(case.num_directions):
            index = layer * case.num_directions + direction
            out, h_last = _direction(
                layer_input, h0[index], valid, weights.cell(layer, direction), bool(direction), form
            )
            outs.append(out)
            h_n.append(h_last)
        layer_input = np.concatenate(outs[::-1] if form.directions_reversed else outs, axis=2)
    output = layer_input.transpose(1, 0, 2) if case.batch_first else layer_input
    return GruOutput(output=np.ascontiguousarray(output), h_n=np.stack(h_n))
