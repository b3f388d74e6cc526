"""The float64 reference gradients: backpropagation through time of `conformance.oracle`, in NumPy.

The loss a backend differentiates is the inner product of the GRU's results with two fixed
cotangents drawn from the case's own streams (`make_cotangents`):

    L = sum over valid positions of <output, G_out>  +  <h_n, G_h>

so dL/d(anything) is the vector-Jacobian product a backend's autograd computes for the
seeds (G_out, G_h). `gru_backward` returns dL/dx, dL/dh0 (when h0 is an input) and dL/d every
`nn.GRU` parameter, for exactly the forward semantics of `gru_reference`: layers, both
directions, batch_first, bias or not, packed batches and both reset forms.

Packed batches. An invalid step (t >= length) holds the state and outputs zero, so it
passes the adjoint of the state through unchanged and receives no gradient: dL/dx is
exactly zero at padded positions, and parameters collect nothing from them. The reverse
direction's adjoint pass ends at each item's last valid step, where its forward began.
G_out is stored with zeros at padded positions: they are outside L, and zeros make a plain
sum(<output, G_out>) (what `loss` computes, and what a backend that ignores the mask
computes) the same L.

Vectorised over the batch; the loop runs over time only, like the forward oracle. The
forward pass here keeps the gates it needs and is bit-identical to `gru_reference`
(tests/test_oracle_backward.py checks that).

## Backward oracle and tolerances

To check gradients as well as outputs, the loss is fixed by the case: two
cotangents G_out (output's layout) and G_h (h_n's) drawn U(-1, 1) from the case's own streams
("cotangent-output", "cotangent-h_n"; the inputs' streams are untouched) and rounded to the
case dtype, with G_out zero at padded positions, and

    L = <output, G_out> + <h_n, G_h>.

A backend's dL/dx, dL/dh0 (when the case gives h0) and dL/d every `state_dict` parameter are
compared with `gru_backward`, a float64 NumPy backpropagation through time of exactly the
forward oracle (same op order: its forward is bit-identical to `gru_reference`). dL/dx is
exactly zero at padded positions; the reverse direction's adjoint pass ends at each item's
last valid step.

The oracle is validated (tests/test_oracle_backward.py) against central finite differences
of `gru_reference` in float64 (step 1e-5 along a random direction of every tensor and on
single elements, both reset forms; bound 1e-7 relative to the size of the derivative's
terms, from truncation ~1e-11 and cancellation ~1e-10; measured worst 6.8e-10) and against
torch float64 autograd through `pack_padded_sequence` (bound 1e-12 relative to the tensor's
largest gradient; measured worst 1.4e-14, over 260 steps). Planted wrong backwards (h0's
gradient dropped, a reverse direction ignoring lengths, the other reset form) fail both
comparisons with relative errors of 0.5 to 2.

Tolerances (`conformance.tolerance_backward`, whose docstring has the full derivation) are
per gradient tensor k:

    atol_k = 2 * (sigma_f * Gs_k  +  sigma_b * Ga_k  +  u_sum * A_k)

sigma_f is the forward's per-step error (3 u_io + sqrt(I + H + 2) u_acc) and Gs_k what
forward-state noise does to gradient k; sigma_b = 3 u_io + sqrt(3H + 1) u_acc is the adjoint
step's error (its dot products W_hh^T d(gates) have length 3H, plus z * dL/dh) and Ga_k what
noise on the adjoint states, relative to their size, does to gradient k. Both gains are
measured on the float64 oracle by Monte Carlo arithmetic, like the forward's error gain.
u_sum * A_k is the rounding of the sums every parameter gradient is: T*B terms, added step by
step into a running sum, whose first-order error has spread u * sqrt(sum_t S_t^2 +
sum_t |C_t|^2) (running sums S_t, step terms C_t), so it grows with T*B and with the gradient.
On the test cases torch float32 autograd has a worst headroom of 0.12 (0.26 over the pairwise
tier in each case's own dtype, float16 and bfloat16 included), while zeroing bias_hh's reset
block fails float32 with headroom 481 or more; in 16-bit formats, whose gradients are only
known to about a percent, that bug is within the tolerance in some cases.
Pairwise tier (19 cases), on a shared 2-core machine: oracle backward 0.3 to 0.5 s, tolerance
3 to 5 s (`benchmarks/bench_backward_oracle.py`; the forward error gain takes about 1.1 s).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from conformance.case import Case
from conformance.data import Cotangents, GruOutput, Inputs, Weights, case_data, make_cotangents, param_names
from conformance.oracle import _sigmoid  # the same function, so the forward is bit-identical

Cell = tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]


@dataclass(frozen=True)
class Gradients:
    """dL/d(input) by name, all float64, each in the shape and layout of what it differentiates.

    Keys: "x" (x's layout, zero at padded positions), "h0" (only when the case's inputs give
    h0), then every parameter named as `conformance.data.param_names(case)`. `forward` is the
    oracle's forward result the gradients belong to.
    """

    tensors: dict[str, np.ndarray]
    forward: GruOutput

    @property
    def x(self) -> np.ndarray:
        return self.tensors["x"]

    @property
    def h0(self) -> np.ndarray | None:
        return self.tensors.get("h0")


def loss(result: GruOutput, cotangents: Cotangents) -> float:
    """L = <output, G_out> + <h_n, G_h> in float64 (G_out is zero at padded positions)."""
    out = np.asarray(result.output, dtype=np.float64)
    h_n = np.asarray(result.h_n, dtype=np.float64)
    g_out = np.asarray(cotangents.output, dtype=np.float64)
    g_h = np.asarray(cotangents.h_n, dtype=np.float64)
    return float(np.sum(out * g_out) + np.sum(h_n * g_h))


def _float64_cell(cell: Cell) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    w_ih, w_hh = np.asarray(cell[0], dtype=np.float64), np.asarray(cell[1], dtype=np.float64)
    hidden = w_hh.shape[1]
    b_ih, b_hh = (np.zeros(3 * hidden) if b is None else np.asarray(b, dtype=np.float64) for b in cell[2:])
    return w_ih, w_hh, b_ih, b_hh


@dataclass
class _Tape:
    """What one direction's forward keeps for its backward: its input and, per step, the state before it and the gates."""

    xs: np.ndarray  # (T,B,I) the direction's input
    h_prev: np.ndarray  # (T,B,H) the state each step starts from
    r: np.ndarray
    z: np.ndarray
    n: np.ndarray
    hh_n: np.ndarray  # (T,B,H) torch's form: W_hn h + b_hn, which r multiplies; the other: r * h, which W_hn multiplies


def _forward_direction(
    xs: np.ndarray,
    h: np.ndarray,
    valid: np.ndarray,
    cell: Cell,
    reverse: bool,
    linear_before_reset: bool,
    noise: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, _Tape]:
    """`conformance.oracle._direction`, operation for operation, keeping the tape."""
    w_ih, w_hh, b_ih, b_hh = _float64_cell(cell)
    hidden = w_hh.shape[1]
    gi_all = xs @ w_ih.T + b_ih
    out = np.zeros((xs.shape[0], xs.shape[1], hidden))
    tape = _Tape(xs, *(np.zeros_like(out) for _ in range(5)))
    w_hr, w_hz, w_hn = w_hh[:hidden], w_hh[hidden : 2 * hidden], w_hh[2 * hidden :]
    b_hr, b_hz, b_hn = b_hh[:hidden], b_hh[hidden : 2 * hidden], b_hh[2 * hidden :]
    steps = range(xs.shape[0] - 1, -1, -1) if reverse else range(xs.shape[0])
    for t in steps:
        gi = gi_all[t]
        i_r, i_z, i_n = gi[:, :hidden], gi[:, hidden : 2 * hidden], gi[:, 2 * hidden :]
        r = _sigmoid(i_r + h @ w_hr.T + b_hr)
        z = _sigmoid(i_z + h @ w_hz.T + b_hz)
        if linear_before_reset:
            hh_n = h @ w_hn.T + b_hn
            n = np.tanh(i_n + r * hh_n)
        else:
            hh_n = r * h
            n = np.tanh(i_n + hh_n @ w_hn.T + b_hn)
        tape.h_prev[t], tape.r[t], tape.z[t], tape.n[t], tape.hh_n[t] = h, r, z, n, hh_n
        h_new = (1.0 - z) * n + z * h
        if noise is not None:
            h_new = h_new + noise[t]
        mask = valid[t][:, None]
        h = np.where(mask, h_new, h)
        out[t] = np.where(mask, h, 0.0)
    return out, h, tape


def _summed(d_gates: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """sum over steps and batch of outer(d_gates, inputs): (T,B,G), (T,B,I) -> (G,I), one matmul."""
    return d_gates.reshape(-1, d_gates.shape[2]).T @ inputs.reshape(-1, inputs.shape[2])


def _per_step(d_gates: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """sum over the batch only: (T,B,G), (T,B,I) -> (T,G,I)."""
    return np.matmul(d_gates.transpose(0, 2, 1), inputs)


def _products_hh(
    d_gh: np.ndarray, tape: _Tape, linear_before_reset: bool, reduce: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> np.ndarray:
    """dW_hh's products: W_hh multiplies h in every block of torch's form; W_hn multiplies r*h in the other."""
    if linear_before_reset:
        return reduce(d_gh, tape.h_prev)
    two = 2 * tape.h_prev.shape[2]
    return np.concatenate([reduce(d_gh[..., :two], tape.h_prev), reduce(d_gh[..., two:], tape.hh_n)], axis=-2)


@dataclass(frozen=True)
class SumTerms:
    """One parameter gradient as the sum it is: a term per step, in the order the adjoint pass adds them."""

    signed: np.ndarray  # (T, *parameter shape): the step's term, summed over the batch
    magnitude: np.ndarray  # (T, *parameter shape): the same sum over the batch of |term|


@dataclass
class _DirectionGradients:
    x: np.ndarray  # (T,B,I) dL/d(direction input)
    h0: np.ndarray  # (B,H)
    weight_ih: np.ndarray
    weight_hh: np.ndarray
    bias_ih: np.ndarray
    bias_hh: np.ndarray
    terms: dict[str, SumTerms] | None = None  # only when asked: the tolerance's summation model needs them


def _backward_direction(
    tape: _Tape,
    d_out: np.ndarray,
    d_h: np.ndarray,
    valid: np.ndarray,
    cell: Cell,
    reverse: bool,
    linear_before_reset: bool,
    adjoint_noise: np.ndarray | None,
    keep_terms: bool,
) -> _DirectionGradients:
    """The adjoint pass of one direction: steps in the opposite order of its forward.

    d_out (T,B,H) is dL/d(this direction's output), d_h (B,H) dL/d(its h_n).
    `adjoint_noise` (T,B,H) is added to each step's adjoint state, relative to that item's
    largest adjoint element: how the tolerance measures what the recurrence does to the
    adjoint pass's rounding errors.
    """
    w_ih, w_hh, _, _ = _float64_cell(cell)
    hidden = w_hh.shape[1]
    steps, batch = d_out.shape[0], d_out.shape[1]
    d_gi = np.zeros((steps, batch, 3 * hidden))  # dL/d(W_ih x + b_ih), per gate block
    d_gh = np.zeros((steps, batch, 3 * hidden))  # dL/d(W_hh h + b_hh) (n block: of W_hn (r h) in the other form)
    order = range(steps) if reverse else range(steps - 1, -1, -1)
    for t in order:
        mask = valid[t][:, None]
        d_h = d_h + np.where(mask, d_out[t], 0.0)  # padded outputs are constant zeros
        if adjoint_noise is not None:
            scale = np.abs(d_h).max(axis=1, keepdims=True)
            d_h = d_h + np.where(mask, adjoint_noise[t] * scale, 0.0)
        d_new = np.where(mask, d_h, 0.0)  # an invalid step keeps the state: nothing reaches its cell
        h_prev, r, z, n, hh_n = tape.h_prev[t], tape.r[t], tape.z[t], tape.n[t], tape.hh_n[t]
        d_a_n = d_new * (1.0 - z) * (1.0 - n * n)
        d_a_z = d_new * (h_prev - n) * z * (1.0 - z)
        if linear_before_reset:
            d_a_r = d_a_n * hh_n * r * (1.0 - r)
            d_gh[t] = np.concatenate([d_a_r, d_a_z, d_a_n * r], axis=1)
            d_prev = d_new * z + d_gh[t] @ w_hh
        else:
            d_rh = d_a_n @ w_hh[2 * hidden :]
            d_a_r = d_rh * h_prev * r * (1.0 - r)
            d_gh[t] = np.concatenate([d_a_r, d_a_z, d_a_n], axis=1)
            d_prev = d_new * z + d_gh[t, :, : 2 * hidden] @ w_hh[: 2 * hidden] + d_rh * r
        d_gi[t] = np.concatenate([d_a_r, d_a_z, d_a_n], axis=1)
        d_h = np.where(mask, d_prev, d_h)
    grads = _DirectionGradients(
        x=d_gi @ w_ih,
        h0=d_h,
        weight_ih=_summed(d_gi, tape.xs),
        weight_hh=_products_hh(d_gh, tape, linear_before_reset, _summed),
        bias_ih=d_gi.sum(axis=(0, 1)),
        bias_hh=d_gh.sum(axis=(0, 1)),
    )
    if keep_terms:
        by_step = list(order)  # the order a step-by-step backward adds the terms in
        magnitude = _Tape(np.abs(tape.xs), np.abs(tape.h_prev), tape.r, tape.z, tape.n, np.abs(tape.hh_n))
        pairs = {
            "weight_ih": (_per_step(d_gi, tape.xs), _per_step(np.abs(d_gi), magnitude.xs)),
            "weight_hh": (
                _products_hh(d_gh, tape, linear_before_reset, _per_step),
                _products_hh(np.abs(d_gh), magnitude, linear_before_reset, _per_step),
            ),
            "bias_ih": (d_gi.sum(axis=1), np.abs(d_gi).sum(axis=1)),
            "bias_hh": (d_gh.sum(axis=1), np.abs(d_gh).sum(axis=1)),
        }
        grads.terms = {kind: SumTerms(signed[by_step], absolute[by_step]) for kind, (signed, absolute) in pairs.items()}
    return grads


@dataclass
class _Pass:
    gradients: Gradients
    terms: dict[str, SumTerms]  # by parameter name; empty unless asked for


def _run(
    case: Case,
    weights: Weights,
    inputs: Inputs,
    cotangents: Cotangents,
    linear_before_reset: bool,
    state_noise: Sequence[np.ndarray] | None = None,
    adjoint_noise: Sequence[np.ndarray] | None = None,
    keep_terms: bool = False,
) -> _Pass:
    """Forward with tape, then the adjoint pass layer by layer from the top. Noise is indexed layer * D + direction."""
    x = np.asarray(inputs.x, dtype=np.float64)
    if case.batch_first:
        x = x.transpose(1, 0, 2)
    steps, batch = x.shape[0], x.shape[1]
    lengths = np.full(batch, steps) if inputs.lengths is None else np.asarray(inputs.lengths)
    valid = np.arange(steps)[:, None] < lengths[None, :]  # (T,B)
    directions = case.num_directions
    h0 = (
        np.zeros((case.num_layers * directions, batch, case.hidden_size))
        if inputs.h0 is None
        else np.asarray(inputs.h0, dtype=np.float64)
    )
    layer_input, h_n, tapes = x, [], []
    for layer in range(case.num_layers):
        outs = []
        for direction in range(directions):
            index = layer * directions + direction
            out, h_last, tape = _forward_direction(
                layer_input,
                h0[index],
                valid,
                weights.cell(layer, direction),
                bool(direction),
                linear_before_reset,
                None if state_noise is None else state_noise[index],
            )
            outs.append(out)
            h_n.append(h_last)
            tapes.append(tape)
        layer_input = np.concatenate(outs, axis=2)
    output = layer_input.transpose(1, 0, 2) if case.batch_first else layer_input
    forward = GruOutput(output=np.ascontiguousarray(output), h_n=np.stack(h_n))

    g_out = np.asarray(cotangents.output, dtype=np.float64)
    d_layer_out = g_out.transpose(1, 0, 2) if case.batch_first else g_out
    g_h = np.asarray(cotangents.h_n, dtype=np.float64)
    hidden = case.hidden_size
    tensors: dict[str, np.ndarray] = {}
    terms: dict[str, SumTerms] = {}
    d_h0 = np.zeros_like(h0)
    for layer in range(case.num_layers - 1, -1, -1):
        d_layer_in = np.zeros_like(tapes[layer * directions].xs)
        for direction in range(directions):
            index = layer * directions + direction
            grads = _backward_direction(
                tapes[index],
                d_layer_out[:, :, direction * hidden : (direction + 1) * hidden],
                g_h[index],
                valid,
                weights.cell(layer, direction),
                bool(direction),
                linear_before_reset,
                None if adjoint_noise is None else adjoint_noise[index],
                keep_terms,
            )
            d_layer_in = d_layer_in + grads.x
            d_h0[index] = grads.h0
            sfx = f"_l{layer}" + ("_reverse" if direction else "")
            tensors["weight_ih" + sfx], tensors["weight_hh" + sfx] = grads.weight_ih, grads.weight_hh
            if case.bias:
                tensors["bias_ih" + sfx], tensors["bias_hh" + sfx] = grads.bias_ih, grads.bias_hh
            for kind, summed in (grads.terms or {}).items():
                if case.bias or kind.startswith("weight"):
                    terms[kind + sfx] = summed
        d_layer_out = d_layer_in
    d_x = d_layer_out.transpose(1, 0, 2) if case.batch_first else d_layer_out
    ordered: dict[str, np.ndarray] = {"x": np.ascontiguousarray(d_x)}
    if inputs.h0 is not None:
        ordered["h0"] = d_h0
    ordered.update((name, tensors[name]) for name in param_names(case))
    for array in ordered.values():
        array.setflags(write=False)
    return _Pass(Gradients(tensors=ordered, forward=forward), terms)


def gru_backward(
    case: Case,
    weights: Weights,
    inputs: Inputs,
    cotangents: Cotangents,
    linear_before_reset: bool = True,
    state_noise: Sequence[np.ndarray] | None = None,
    adjoint_noise: Sequence[np.ndarray] | None = None,
) -> Gradients:
    """dL/dx, dL/dh0 (if h0 is given) and dL/d every parameter, in float64, for `gru_reference`'s semantics.

    `linear_before_reset=False` differentiates the other published GRU form (see
    `conformance.oracle.gru_reference`). The noises, indexed layer * D + direction, (T,B,H)
    each, are how `conformance.tolerance_backward` measures what the recurrence does to
    rounding errors: `state_noise` is added to each new forward state (as gru_reference's
    step_noise), `adjoint_noise` to each step's adjoint state, times that item's largest
    adjoint element.
    """
    return _run(case, weights, inputs, cotangents, linear_before_reset, state_noise, adjoint_noise).gradients


def parameter_sum_terms(
    case: Case,
    weights: Weights,
    inputs: Inputs,
    cotangents: Cotangents,
    linear_before_reset: bool = True,
) -> dict[str, SumTerms]:
    """Each parameter's gradient as its per-step terms: how large its running sum gets, for the tolerance."""
    return _run(case, weights, inputs, cotangents, linear_before_reset, keep_terms=True).terms


@lru_cache(maxsize=64)
def reference_gradients(case: Case) -> Gradients:
    """The expected gradients of `case` with its own data and cotangents (torch's reset form)."""
    weights, inputs = case_data(case)
    return gru_backward(case, weights, inputs, make_cotangents(case))
