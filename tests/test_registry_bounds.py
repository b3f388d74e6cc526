"""A registry entry explains a difference of the size it declares, and no larger.

An entry once explained any failure it matched: keras-jax's float64 entry expects float32-level
error (about 5e-8), yet a planted gate-order bug in a float64 case (headroom 5e13) was still
labelled `known_divergence`. Each entry now carries its size, and a failure beyond it is a
`fail` whose message names the entry it didn't fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from example_gru_backend.adapter import NumpyGru
from planted_backends import ReverseIgnoresLengths, SwappedRZ, _rows, _swap_rz

from conformance import divergences
from conformance.case import Case
from conformance.data import GruOutput, Inputs, Weights
from conformance.divergences import Divergence, RegistryError
from conformance.engine import check
from conformance.verdict import Verdict

FLOAT64 = Case(3, 4, num_layers=2, bidirectional=True, batch=3, seq_len=6, dtype="float64")
PACKED_BI = Case(3, 4, bidirectional=True, batch=4, seq_len=7, lengths="unsorted", initial_state=True)


@dataclass
class TanhInFloat32(NumpyGru):
    """keras-like: a float64 GRU whose candidate tanh is computed in float32 (float32-level error)."""

    family: str = "keras-like"

    def cell(self, x, h, w_ih, w_hh, b_ih, b_hh):  # type: ignore[no-untyped-def]
        gi, gh = x @ w_ih.T + b_ih, h @ w_hh.T + b_hh
        i_r, i_z, i_n = np.split(gi, 3, axis=1)
        h_r, h_z, h_n = np.split(gh, 3, axis=1)
        r = 1 / (1 + np.exp(-(i_r + h_r)))
        z = 1 / (1 + np.exp(-(i_z + h_z)))
        n = np.tanh((i_n + r * h_n).astype(np.float32)).astype(x.dtype)
        return (1 - z) * n + z * h


@dataclass
class TanhInFloat32AndGatesSwapped(TanhInFloat32):
    """The same, with a new bug on top: r and z read in the wrong order."""

    family: str = "keras-like"

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        return super().run(case, _rows(weights, _swap_rz), inputs)


KERAS_LIKE = Divergence(
    "keras-like-float64-tanh-in-float32",
    ("keras-like[*]",),
    "tanh computed in float32",
    when={"dtype": ("float64",)},
    checks=("output", "h_n"),
    error_level="float32",
)


def test_float32_level_error_in_float64_is_the_known_divergence() -> None:
    result = check(TanhInFloat32(), FLOAT64, registry=[KERAS_LIKE])
    assert result.verdict == Verdict.KNOWN_DIVERGENCE, result.reason
    assert result.worst_headroom is not None and 1 < result.worst_headroom <= 2.0**29


def test_a_gate_order_bug_in_the_same_cases_is_a_failure_naming_the_entry_it_did_not_fit() -> None:
    result = check(TanhInFloat32AndGatesSwapped(), FLOAT64, registry=[KERAS_LIKE])
    assert result.verdict == Verdict.FAIL
    assert result.worst_headroom is not None and result.worst_headroom > 2.0**29
    assert (
        "not the known divergence keras-like-float64-tanh-in-float32: it explains float32-level error" in result.reason
    )


def test_max_headroom_bounds_an_entry() -> None:
    loose = Divergence("x", ("planted-swap-rz[*]",), "r", max_headroom=1e9)
    tight = Divergence("x", ("planted-swap-rz[*]",), "r", max_headroom=10.0)
    assert check(SwappedRZ(), Case(3, 4), registry=[loose]).verdict == Verdict.KNOWN_DIVERGENCE
    result = check(SwappedRZ(), Case(3, 4), registry=[tight])
    assert result.verdict == Verdict.FAIL and "it explains headroom up to 10" in result.reason


def test_a_variant_bounded_entry_explains_only_what_that_variant_reproduces() -> None:
    entry = Divergence("rev", ("planted-*",), "reverse ignores lengths", variant="reverse-starts-at-padded-end")
    assert check(ReverseIgnoresLengths(), PACKED_BI, registry=[entry]).verdict == Verdict.KNOWN_DIVERGENCE
    result = check(SwappedRZ(), PACKED_BI, registry=[entry])
    assert result.verdict == Verdict.FAIL
    assert (
        "the variant 'reverse-starts-at-padded-end' reproduces, and that variant doesn't reproduce this one"
        in result.reason
    )


def test_a_crash_is_explained_only_by_an_entry_about_that_crash() -> None:
    @dataclass
    class Crashes(NumpyGru):
        family: str = "crashes"

        def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
            raise RuntimeError("kernel exploded")

    numeric = Divergence("n", ("crashes[*]",), "r", max_headroom=1e9)
    about_it = Divergence("c", ("crashes[*]",), "r", error_contains="kernel exploded")
    other = Divergence("o", ("crashes[*]",), "r", error_contains="out of memory")
    assert check(Crashes(), Case(3, 4), registry=[about_it]).verdict == Verdict.KNOWN_DIVERGENCE
    for entry in (numeric, other):
        result = check(Crashes(), Case(3, 4), registry=[entry])
        assert result.verdict == Verdict.ERROR and f"not the known divergence {entry.id}" in result.reason


ENTRY = """
[[divergence]]
id = "e"
backends = ["torch[*]"]
reason = "r"
"""


@pytest.mark.parametrize(
    "size, message",
    [
        ("", "exactly one of max_headroom, error_level, variant, error_contains; got none"),
        ('max_headroom = 10\nerror_level = "float32"', "got max_headroom, error_level"),
        ("max_headroom = 0.5", "max_headroom: expected a number > 1"),
        ('error_level = "float8"', "error_level"),
        ('variant = "no-such-variant"', "variant"),
    ],
)
def test_an_entry_must_carry_exactly_one_valid_size(size: str, message: str, tmp_path: Path) -> None:
    from conformance.variants import VARIANTS

    registry = tmp_path / "divergences.toml"
    registry.write_text(ENTRY + size + "\n", encoding="utf-8")
    with pytest.raises(RegistryError, match=message.replace("(", r"\(").replace(")", r"\)")):
        divergences.load(registry, variants=VARIANTS)


def test_the_shipped_entries_carry_their_sizes() -> None:
    from conformance.variants import VARIANTS

    sizes = {d.id: d.size() for d in divergences.load(variants=VARIANTS)}
    assert sizes == {
        "onnx-reference-gru-ignores-sequence-lens": "variant = 'lengths-ignored'",
        "keras-jax-float64-tanh-in-float32": "error_level = 'float32'",
        "keras-torch-float64-masked-matmul-in-float32": "error_level = 'float32'",
    }
