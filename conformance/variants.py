"""Semantic variants of the oracle: named ways a GRU can be wrong, to say what a failure looks like.

A failing result says where the numbers differ; a variant says why they might. Each
variant is the oracle with one documented mistake (the other published GRU form, gate
blocks read in another order, h_n in direction-major order, lengths ignored for the
state, ...), computed in float64 on the case's own data. `diagnose` runs every variant
that applies to a failing case and reports those that reproduce the backend's answer
within the case's tolerance.

Adding a variant is one function and one decorator line:

    @variant("h0-ignored", "the initial state ignored: every direction starts from zeros",
             family=STATE, applies=lambda case: case.initial_state)
    def _h0_ignored(case, weights, inputs):
        return gru(case, weights, replace(inputs, h0=None))

A variant that doesn't apply to a case (direction order on a unidirectional case)
says so through `applies` or by returning None. A variant that coincides with the
oracle on a case's data is never reported: it must lie more than SEPARATION (2)
tolerances from the oracle to count as an explanation. Variants are built from
`conformance.forms.gru` (the oracle's recurrence, generalised) or small transformations
of the weights, inputs or outputs, never copies of the oracle.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from conformance.case import Case
from conformance.compare import valid_mask
from conformance.data import GruOutput, Inputs, Weights
from conformance.forms import Form, gru

# Families, in the order the registry lists them.
FORM = "form"  # the GRU equations themselves
GATE_ORDER = "gate-order"  # weights sliced in the wrong gate order
BIAS = "bias"  # biases dropped or misplaced
LAYOUT = "layout"  # right numbers, wrong places
STATE = "state"  # initial state, lengths and padding

# A variant explains a failure only if it is more than this many tolerances from the oracle.
# At 2 the tolerance balls around the variant and the oracle don't overlap: no answer within
# tolerance of the variant passes, so "reproduces the variant" can't also mean "almost right".
# (4 was tried: it dropped real matches on long bfloat16 cases, where the tolerance is wide and
# a gate-order mistake lies 3.6 tolerances from the oracle and the backend within 0.01 tolerance of it.)
SEPARATION = 2.0

Compute = Callable[[Case, Weights, Inputs], GruOutput | None]


@dataclass(frozen=True)
class Variant:
    """One named mistake: `compute` gives what a GRU making it returns (float64), None where it can't apply."""

    id: str
    family: str
    explanation: str
    compute: Compute
    applies: Callable[[Case], bool]

    def as_dict(self) -> dict[str, str]:
        """The registry entry as the report lists it (the functions stay in code)."""
        return {"id": self.id, "family": self.family, "explanation": self.explanation}


VARIANTS: dict[str, Variant] = {}


def variant(
    id: str, explanation: str, family: str, applies: Callable[[Case], bool] = lambda case: True
) -> Callable[[Compute], Compute]:
    """Register a variant: `@variant("id", "one-line explanation", family=..., applies=...)`."""

    def register(compute: Compute) -> Compute:
        if id in VARIANTS:
            raise ValueError(f"variant {id!r} is registered twice")
        VARIANTS[id] = Variant(id, family, explanation, compute, applies)
        return compute

    return register


def _form(**changes: Any) -> Compute:
    form = Form(**changes)

    def compute(case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        return gru(case, weights, inputs, form)

    return compute


def _ragged(case: Case) -> bool:
    """Packed with items of different lengths: the only batches where padding exists."""
    return case.lengths in ("sorted", "unsorted", "zero")


def _edit_weights(weights: Weights, edit: Callable[[str, np.ndarray], np.ndarray]) -> Weights:
    return Weights({name: edit(name, np.array(value, dtype=np.float64)) for name, value in weights.tensors.items()})


# --- form: the equations ---------------------------------------------------------------------

variant(
    "reset-before-matmul",
    "the reset gate applied before the recurrent matmul, n = tanh(W_in x + b_in + W_hn (r*h) + b_hn) "
    "(ONNX's default linear_before_reset=0, Keras reset_after=False)",
    FORM,
)(_form(linear_before_reset=False))

variant(
    "update-gate-swapped",
    "the update gate's convention swapped: h' = z*n + (1-z)*h instead of (1-z)*n + z*h",
    FORM,
)(_form(update_swapped=True))


# --- gate order -------------------------------------------------------------------------------

_GATES = ("r", "z", "n")


def _gate_order(order: tuple[str, ...]) -> Compute:
    """The backend believes the stored blocks are `order`: the block it uses as gate g is stored block order.index(g)."""
    source = [order.index(gate) for gate in _GATES]

    def reorder(name: str, value: np.ndarray) -> np.ndarray:
        blocks = np.split(value, 3, axis=0)
        return np.concatenate([blocks[i] for i in source], axis=0)

    def compute(case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        return gru(case, _edit_weights(weights, reorder), inputs)

    return compute


for _order in itertools.permutations(_GATES):
    if _order == _GATES:
        continue
    _hint = (
        " (Keras's and ONNX's z, r, h order, weights copied without reordering)" if _order == ("z", "r", "n") else ""
    )
    variant(
        f"gate-order-{''.join(_order)}",
        f"the gate blocks of every weight and bias read as ({', '.join(_order)}) instead of (r, z, n){_hint}",
        GATE_ORDER,
    )(_gate_order(_order))


# --- biases -----------------------------------------------------------------------------------


def _zero_biases(kinds: tuple[str, ...], gates: tuple[int, ...] = (0, 1, 2)) -> Compute:
    """Zero the named biases' blocks `gates` (0, 1, 2 = r, z, n)."""

    def zero(name: str, value: np.ndarray) -> np.ndarray:
        if name.startswith(kinds):
            third = len(value) // 3
            for gate in gates:
                value[gate * third : (gate + 1) * third] = 0.0
        return value

    def compute(case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        return gru(case, _edit_weights(weights, zero), inputs)

    return compute


def _has_bias(case: Case) -> bool:
    return case.bias


variant(
    "bias-hn-outside-reset",
    "the recurrent bias b_hn outside the reset product, n = tanh(W_in x + b_in + r*(W_hn h) + b_hn) "
    "(b_hn folded into the input bias)",
    BIAS,
    _has_bias,
)(_form(bias_hn_outside_reset=True))

variant(
    "b-hn-dropped",
    "the recurrent candidate bias b_hn dropped (a target cell with no bias inside r*(...))",
    BIAS,
    _has_bias,
)(_zero_biases(("bias_hh",), (2,)))
variant("recurrent-biases-dropped", "every recurrent bias (bias_hh) dropped", BIAS, _has_bias)(
    _zero_biases(("bias_hh",))
)
variant("input-biases-dropped", "every input bias (bias_ih) dropped", BIAS, _has_bias)(_zero_biases(("bias_ih",)))
variant("biases-dropped", "every bias dropped (bias=False)", BIAS, _has_bias)(_zero_biases(("bias_ih", "bias_hh")))


# --- layout -----------------------------------------------------------------------------------


def _bidirectional(case: Case) -> bool:
    return case.bidirectional


@variant(
    "h-n-direction-major",
    "h_n in direction-major order (all forward layers, then all backward) instead of layer-major",
    LAYOUT,
    lambda case: case.bidirectional and case.num_layers > 1,
)
def _h_n_direction_major(case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
    right = gru(case, weights, inputs)
    layers, directions, batch, hidden = case.num_layers, case.num_directions, *right.h_n.shape[1:]
    h_n = right.h_n.reshape(layers, directions, batch, hidden).transpose(1, 0, 2, 3).reshape(right.h_n.shape)
    return GruOutput(right.output, np.ascontiguousarray(h_n))


@variant("h-n-directions-swapped", "h_n holds backward before forward within each layer", LAYOUT, _bidirectional)
def _h_n_directions_swapped(case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
    right = gru(case, weights, inputs)
    h_n = right.h_n.reshape(case.num_layers, 2, *right.h_n.shape[1:])[:, ::-1].reshape(right.h_n.shape)
    return GruOutput(right.output, np.ascontiguousarray(h_n))


@variant(
    "output-directions-swapped",
    "the last layer's output concatenated as (backward, forward) instead of (forward, backward)",
    LAYOUT,
    _bidirectional,
)
def _output_directions_swapped(case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
    right = gru(case, weights, inputs)
    hidden = case.hidden_size
    output = np.concatenate([right.output[..., hidden:], right.output[..., :hidden]], axis=-1)
    return GruOutput(output, right.h_n)


variant(
    "directions-concatenated-reversed",
    "every layer concatenates (backward, forward), so deeper layers read their input in the swapped order too",
    LAYOUT,
    lambda case: case.bidirectional and case.num_layers > 1,  # one layer: same as output-directions-swapped
)(_form(directions_reversed=True))


@variant(
    "batch-first-by-reshape",
    "batch_first handled by a reshape instead of a transpose, on input and output: (B,T,I) read as (T,B,I)",
    LAYOUT,
    lambda case: case.batch_first and case.batch > 1 and case.seq_len > 1,
)
def _batch_first_by_reshape(case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
    batch, steps = inputs.x.shape[0], inputs.x.shape[1]
    x = np.asarray(inputs.x).reshape(steps, batch, -1)
    time_major = gru(replace(case, batch_first=False), weights, replace(inputs, x=x))
    return GruOutput(time_major.output.reshape(batch, steps, -1), time_major.h_n)


@variant(
    "batch-first-ignored",
    "batch_first ignored: x (B,T,I) read as time-major, so batch and time swap roles (output and h_n follow)",
    LAYOUT,
    lambda case: case.batch_first and not case.packed and (not case.initial_state or case.batch == case.seq_len),
)
def _batch_first_ignored(case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
    return gru(replace(case, batch_first=False), weights, inputs)


@variant(
    "batch-first-output-time-major",
    "batch_first honoured on input but output returned time-major (T,B,D*H)",
    LAYOUT,
    lambda case: case.batch_first,
)
def _batch_first_output_time_major(case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
    right = gru(case, weights, inputs)
    return GruOutput(np.ascontiguousarray(right.output.transpose(1, 0, 2)), right.h_n)


# --- state: initial state, lengths, padding ---------------------------------------------------


@variant(
    "h0-ignored", "the initial state ignored: every direction starts from zeros", STATE, lambda case: case.initial_state
)
def _h0_ignored(case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
    return gru(case, weights, replace(inputs, h0=None))


variant(
    "padding-advances-state",
    "lengths ignored for the state (every direction steps through padded steps), padded outputs still zero",
    STATE,
    _ragged,
)(_form(advance_through_padding=(True, True)))

variant(
    "reverse-starts-at-padded-end",
    "the backward direction starts at step T-1 for every item, padding included (lengths ignored there)",
    STATE,
    lambda case: case.bidirectional and _ragged(case),
)(_form(advance_through_padding=(False, True)))

variant(
    "forward-state-through-padding",
    "the forward state steps through padded steps, so h_n is the state at step T-1, not at the last valid step",
    STATE,
    lambda case: case.bidirectional and _ragged(case),  # unidirectional: same as padding-advances-state
)(_form(advance_through_padding=(True, False)))


@variant(
    "lengths-ignored", "lengths ignored entirely: a dense run over padding, padded outputs not zeroed", STATE, _ragged
)
def _lengths_ignored(case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
    return gru(case, weights, replace(inputs, lengths=None))


@variant(
    "lengths-in-sorted-order",
    "lengths applied in sorted (descending) order to an unsorted batch: item i gets the i-th largest length",
    STATE,
    lambda case: case.lengths == "unsorted",
)
def _lengths_in_sorted_order(case: Case, weights: Weights, inputs: Inputs) -> GruOutput | None:
    if inputs.lengths is None:
        return None
    return gru(case, weights, replace(inputs, lengths=np.sort(inputs.lengths)[::-1].copy()))


@variant(
    "results-in-sorted-order",
    "an unsorted batch sorted by length for packing and never restored: output and h_n items in sorted order",
    STATE,
    lambda case: case.lengths == "unsorted",
)
def _results_in_sorted_order(case: Case, weights: Weights, inputs: Inputs) -> GruOutput | None:
    if inputs.lengths is None:
        return None
    right = gru(case, weights, inputs)
    order = np.argsort(-np.asarray(inputs.lengths), kind="stable")
    output = right.output[order] if case.batch_first else right.output[:, order]
    return GruOutput(np.ascontiguousarray(output), np.ascontiguousarray(right.h_n[:, order]))


variant(
    "h-n-from-last-output",
    "h_n taken from the output at the last time step (output[-1]) instead of each direction's final state",
    STATE,
)(_form(h_n_from_last_output=True))


# --- diagnosis --------------------------------------------------------------------------------


@dataclass(frozen=True)
class VariantMatch:
    """A variant that reproduces a backend's answer: `error` is max |actual - variant|, headroom = error / tolerance.

    `separation` is the variant's own distance from the oracle in tolerances (how clearly it
    differs from the truth on this case); `padding_agrees` whether padded output positions agree
    within the tolerance too. Padding is not part of the match (a backend may fill it by its own
    convention), only a tie-break between variants that differ nowhere else.
    """

    id: str
    family: str
    explanation: str
    error: float
    headroom: float
    separation: float
    padding_agrees: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VariantMatch:
        return cls(**data)

    def describe(self) -> str:
        return f"{self.id} ({self.explanation}): max abs diff {self.error:.3g}, headroom {self.headroom:.3g}"


def _as_float(array: Any) -> np.ndarray:
    return np.asarray(array, dtype=np.float64)


def distance(case: Case, lengths: np.ndarray | None, a: GruOutput, b: GruOutput) -> float:
    """max |a - b| over output positions inside each item's length and all of h_n; inf if shapes differ.

    Positions are the case's valid ones where the output has the case's shape; a layout
    variant of another shape is compared everywhere (its padding is zeros like anyone's).
    NaN counts as infinitely far.
    """
    out_a, out_b, hn_a, hn_b = _as_float(a.output), _as_float(b.output), _as_float(a.h_n), _as_float(b.h_n)
    if out_a.shape != out_b.shape or hn_a.shape != hn_b.shape:
        return float("inf")
    worst = 0.0
    for diff, mask in ((np.abs(out_a - out_b), _output_mask(case, lengths, out_a.shape)), (np.abs(hn_a - hn_b), None)):
        if diff.size == 0:
            continue
        diff = np.where(np.isnan(diff), np.inf, diff)
        selected = diff if mask is None else diff[mask]
        if selected.size:
            worst = max(worst, float(selected.max()))
    return worst


def _output_mask(case: Case, lengths: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    layout = (case.batch, case.seq_len) if case.batch_first else (case.seq_len, case.batch)
    if lengths is None or shape[:2] != layout:
        return None
    return np.asarray(valid_mask(case, lengths, shape))


def _padding_agrees(case: Case, lengths: np.ndarray | None, a: GruOutput, b: GruOutput, tolerance: float) -> bool:
    out_a, out_b = _as_float(a.output), _as_float(b.output)
    mask = _output_mask(case, lengths, out_a.shape)
    if mask is None or out_a.shape != out_b.shape or mask.all():
        return True
    return bool(np.abs(out_a[~mask] - out_b[~mask]).max() <= tolerance)


def applicable(case: Case) -> list[Variant]:
    """The variants that can differ from the oracle on a case of this shape, in registry order."""
    return [v for v in VARIANTS.values() if v.applies(case)]


def reproduces(
    variant_id: str,
    case: Case,
    weights: Weights,
    inputs: Inputs,
    actual: GruOutput,
    tolerance: float,
    expected: GruOutput,
) -> bool:
    """Whether one named variant reproduces `actual` within `tolerance` (and differs from the oracle), the
    test `diagnose` applies to each variant; a registry entry bounded by a variant asks exactly this."""
    candidate = VARIANTS[variant_id]
    if not candidate.applies(case):
        return False
    produced = candidate.compute(case, weights, inputs)
    if produced is None:
        return False
    lengths = inputs.lengths
    return (
        distance(case, lengths, produced, expected) > SEPARATION * tolerance
        and distance(case, lengths, produced, actual) <= tolerance
    )


def diagnose(
    case: Case, weights: Weights, inputs: Inputs, actual: GruOutput, tolerance: float, expected: GruOutput
) -> list[VariantMatch]:
    """The variants that reproduce `actual` within `tolerance`, best first.

    Best: padded positions agree too, then smallest headroom, then registry order (variants
    that compute the same numbers on this case tie on headroom; `describe` lists them all).
    `expected` is the oracle's answer for the case (the pipeline has it already). A variant
    counts only if it is more than SEPARATION tolerances from the oracle on this case's data,
    so a variant that happens to coincide with the truth (h0 ignored when h0 is tiny, a gate
    order that changes nothing at hidden_size 1) never explains anything. Meant for failing
    results; on a passing one it returns [] by construction.
    """
    lengths = inputs.lengths
    matches: list[tuple[bool, float, int, VariantMatch]] = []
    for rank, candidate in enumerate(applicable(case)):
        produced = candidate.compute(case, weights, inputs)
        if produced is None:
            continue
        separation = distance(case, lengths, produced, expected)
        if separation <= SEPARATION * tolerance:
            continue
        error = distance(case, lengths, produced, actual)
        if not error <= tolerance:
            continue
        headroom = error / tolerance if tolerance > 0 else 0.0
        agrees = _padding_agrees(case, lengths, produced, actual, tolerance)
        match = VariantMatch(
            candidate.id,
            candidate.family,
            candidate.explanation,
            error,
            headroom,
            separation / tolerance if tolerance > 0 else float("inf"),
            agrees,
        )
        matches.append((not agrees, headroom, rank, match))
    return [m for *_, m in sorted(matches, key=lambda item: item[:3])]


def describe(matches: list[VariantMatch]) -> str:
    """One line for a failure's reason: the best match, then the others that also fit."""
    if not matches:
        return "no known variant reproduces this result"
    best, others = matches[0], matches[1:]
    line = f"consistent with {best.describe()}"
    if others:
        line += "; also consistent with " + ", ".join(m.id for m in others)
    return line
