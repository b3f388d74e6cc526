"""The pipeline's diagnose step: name the likely mistake behind a failure.

A failing result is tested against the library of semantic variants (`conformance.variants`:
the other reset form, swapped gates, a misplaced bias, layout and state mistakes) and
against lower-precision arithmetic (`conformance.precision`). Every hypothesis that
reproduces the backend's output within the case's tolerance is recorded with the result,
best first. Only results still failing after the registry are diagnosed: a pass has nothing
to explain, and a known divergence is explained by its entry. Float64 NumPy on small cases,
so the cost is a few oracle calls per failure (`benchmarks/bench_diagnosis.py`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from conformance.case import Case
from conformance.data import GruOutput, Inputs, Weights
from conformance.forms import PYTORCH, Form, gru
from conformance.precision import PrecisionMatch, diagnose_precision
from conformance.variants import FORM, SEPARATION, VARIANTS, VariantMatch, diagnose, distance


@dataclass
class Diagnosis:
    """The hypotheses that reproduce a failing output: semantic variants, best first, and a precision match."""

    variants: list[VariantMatch] = field(default_factory=list)
    precision: PrecisionMatch | None = None

    @property
    def found(self) -> bool:
        return bool(self.variants) or self.precision is not None

    def describe(self) -> str:
        """One line for the failure message and the terminal summary."""
        if self.variants:
            best = self.variants[0]
            others = [m.id for m in self.variants[1:]]
            also = f" (also consistent: {', '.join(others)})" if others else ""
            return f"likely mistake: {best.describe()}{also}"
        if self.precision is not None:
            return f"likely mistake: {self.precision.describe()}"
        return "no known variant or lower precision reproduces this result"

    def as_dict(self) -> dict[str, Any]:
        return {
            "variants": [m.as_dict() for m in self.variants],
            "precision": None if self.precision is None else self.precision.as_dict(),
            "summary": self.describe(),
        }


def diagnose_failure(
    case: Case,
    weights: Weights,
    inputs: Inputs,
    expected: GruOutput,
    actual: GruOutput,
    atol: float,
    form: Form = PYTORCH,
) -> Diagnosis:
    """Every variant, and the coarser format, that reproduces `actual` within `atol`.

    The variant library is written around PyTorch's form; for a backend that declares another
    form, the hypotheses tried are that it ignores part of what it declares (`ignored_attributes`).
    """
    if form != PYTORCH:
        return Diagnosis(ignored_attributes(case, weights, inputs, expected, actual, atol, form))
    variants = diagnose(case, weights, inputs, actual, atol, expected)
    precision = None if variants else diagnose_precision(case, weights, inputs, actual, atol, expected)
    return Diagnosis(variants, precision)


# What a declared form can ask for, by the ONNX attribute that asks for it, and that attribute's default.
ATTRIBUTES: dict[str, dict[str, Any]] = {
    "linear_before_reset": {"linear_before_reset": True},
    "activations": {"gate_activation": PYTORCH.gate_activation, "candidate_activation": PYTORCH.candidate_activation},
    "clip": {"clip": None},
}


# Not an attribute but an input a runtime may ignore (onnx.reference and OpenVINO with dynamic shapes do).
SEQUENCE_LENS = "sequence_lens"


def form_variant_ids() -> list[str]:
    """The ids `ignored_attributes` can name (`ignores-activations-and-clip`, ...): registry entries about a
    backend that declares another form may be bounded by one, as by a variant of PyTorch's form."""
    names = [*ATTRIBUTES, SEQUENCE_LENS]
    return [
        f"ignores-{'-and-'.join(combo)}"
        for size in range(1, len(names) + 1)
        for combo in itertools.combinations(names, size)
    ]


def registry_variant_ids() -> list[str]:
    """Every id a registry entry's `variant` may name: PyTorch-form variants and declared-form hypotheses."""
    return [*VARIANTS, *form_variant_ids()]


def ignored_attributes(
    case: Case, weights: Weights, inputs: Inputs, expected: GruOutput, actual: GruOutput, atol: float, form: Form
) -> list[VariantMatch]:
    """For a backend declaring a form other than PyTorch's: which of its attributes does it ignore?

    Each hypothesis is the declared form with some of its attributes back at their defaults (all of
    them: PyTorch's GRU); those that reproduce `actual` within `atol`, fewest attributes first.
    """
    differing = [name for name, fields in ATTRIBUTES.items() if any(getattr(form, f) != d for f, d in fields.items())]
    if inputs.lengths is not None and len(set(np.asarray(inputs.lengths).tolist()) | {case.seq_len}) > 1:
        differing.append(SEQUENCE_LENS)  # lengths ignored: a dense run over the padding, in the declared form
    found: list[tuple[int, float, VariantMatch]] = []
    for size in range(1, len(differing) + 1):
        for names in itertools.combinations(differing, size):
            changes = {f: d for name in names if name != SEQUENCE_LENS for f, d in ATTRIBUTES[name].items()}
            given = replace(inputs, lengths=None) if SEQUENCE_LENS in names else inputs
            produced = gru(case, weights, given, replace(form, **changes))
            separation = distance(case, inputs.lengths, produced, expected)
            error = distance(case, inputs.lengths, produced, actual)
            if separation <= SEPARATION * atol or not error <= atol:
                continue
            over = " over the padding (a dense run)" if SEQUENCE_LENS in names else ""
            explanation = (
                f"{' and '.join(names)} ignored: computes {replace(form, **changes).describe()}{over}, "
                f"not {form.describe()}"
            )
            match = VariantMatch(
                f"ignores-{'-and-'.join(names)}", FORM, explanation, error, error / atol, separation / atol, True
            )
            found.append((size, error, match))
    return [m for *_, m in sorted(found, key=lambda item: item[:2])]


def empty_item_ran(
    case: Case, weights: Weights, inputs: Inputs, actual: GruOutput, atol: float, form: Form = PYTORCH
) -> str | None:
    """For a length-0 item whose h_n isn't the policy's: did it run some steps anyway? The phrase that says so.

    Tried: the empty items run 1 step, or all seq_len (a length of 0 read as "full", or an index of
    length - 1 = -1 picking the last step). None when neither reproduces the returned h_n within `atol`.
    """
    if inputs.lengths is None:
        return None
    lengths = np.asarray(inputs.lengths)
    empty = lengths == 0
    got = np.asarray(actual.h_n, dtype=np.float64)[:, empty]
    for steps, phrase in ((case.seq_len, f"the state after all {case.seq_len} steps"), (1, "the state after 1 step")):
        ran = gru(case, weights, replace(inputs, lengths=np.where(empty, steps, lengths)), form)
        if got.shape == ran.h_n[:, empty].shape and np.abs(got - ran.h_n[:, empty]).max() <= atol:
            return f"h_n of a length-0 item is {phrase} (it ran), not " + ("h0" if case.initial_state else "0")
    return None
