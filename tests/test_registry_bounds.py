"""A registry entry explains a difference of the size it declares, and no larger.

An entry once explained any failure it matched: keras-jax's float64 entry expects float32-level
error (about 5e-8), yet a planted gate-order bug in a float64 case (headroom 5e13) was still
labelled `known_divergence`. Each entry now carries its size, and a failure beyond it is a
`fail` whose message names the entry it didn't fit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
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


def test_variant_level_reproduces_a_variant_within_a_coarser_formats_error() -> None:
    """Two divergences at once (lengths ignored, and float64 computed in float32): `variant_level`
    widens only the variant's reproduction test, and only to that format's error."""

    @dataclass
    class ReverseIgnoresLengthsInFloat32(ReverseIgnoresLengths):
        family: str = "planted-rev-f32"

        def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
            out = super().run(case, weights, inputs)
            as_f32 = [np.asarray(a, np.float32).astype(np.float64) for a in (out.output, out.h_n)]
            return GruOutput(*as_f32)

    case = replace(PACKED_BI, dtype="float64")
    plain = Divergence("rev", ("planted-*",), "r", variant="reverse-starts-at-padded-end")
    at_f32 = replace(plain, variant_level="float32")
    at_f64 = replace(plain, variant_level="float64")
    assert check(ReverseIgnoresLengthsInFloat32(), case, registry=[at_f32]).verdict == Verdict.KNOWN_DIVERGENCE
    for entry in (plain, at_f64):  # planted counterpart: without the level, float32 error is too large
        result = check(ReverseIgnoresLengthsInFloat32(), case, registry=[entry])
        assert result.verdict == Verdict.FAIL and "that variant doesn't reproduce this one" in result.reason
    # the level widens nothing else: a different mistake in float32 is still a failure
    swapped = check(SwappedRZ(), replace(case, lengths="full"), registry=[replace(at_f32, backends=("planted-*",))])
    assert swapped.verdict == Verdict.FAIL


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
    # several entries about one case: the first that fits explains it; none fitting, each says why
    known = check(Crashes(), Case(3, 4), registry=[numeric, other, about_it])
    assert known.verdict == Verdict.KNOWN_DIVERGENCE and known.divergence == "c"
    result = check(Crashes(), Case(3, 4), registry=[numeric, other])
    assert result.verdict == Verdict.ERROR
    assert "not the known divergence n" in result.reason and "not the known divergence o" in result.reason


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
        ('max_headroom = 10\nvariant_level = "float32"', "variant_level only qualifies a variant"),
        ('variant = "lengths-ignored"\nvariant_level = "float8"', "variant_level"),
    ],
)
def test_an_entry_must_carry_exactly_one_valid_size(size: str, message: str, tmp_path: Path) -> None:
    from conformance.diagnosis import registry_variant_ids

    registry = tmp_path / "divergences.toml"
    registry.write_text(ENTRY + size + "\n", encoding="utf-8")
    with pytest.raises(RegistryError, match=message.replace("(", r"\(").replace(")", r"\)")):
        divergences.load(registry, variants=registry_variant_ids())


def test_the_shipped_entries_carry_their_sizes() -> None:
    from conformance.diagnosis import registry_variant_ids

    sizes = {d.id: d.size() for d in divergences.load(variants=registry_variant_ids())}
    assert sizes == {
        "onnx-reference-gru-ignores-sequence-lens": "variant = 'lengths-ignored'",
        "keras-jax-float64-tanh-in-float32": "error_level = 'float32'",
        "openvino-onnx-gru-layout-1-ignored": "error_contains = 'Dimension `batch_size` is not matched between inputs'",
        "openvino-onnx-gru-layout-1-ignored-steps": "variant = 'batch-first-ignored'",
        "openvino-onnx-gru-layout-1-ignored-bidirectional": (
            "error_contains = \"must be evenly divisible by 'num_splits' attribute value: 2\""
        ),
        "openvino-cpu-gru-ignores-sequence-lens": "variant = 'lengths-ignored' at float32-level error",
        "openvino-cpu-gru-ignores-sequence-lens-default": "variant = 'lengths-ignored' at bfloat16-level error",
        "openvino-float64-computed-in-inference-precision": "error_level = 'float32'",
        "openvino-float64-computed-in-inference-precision-default": "error_level = 'bfloat16'",
        "onnx-reference-gru-ignores-activations-and-clip": "variant = 'ignores-activations-and-clip'",
        "onnx-reference-gru-padding-runs-into-h-n": "max_headroom = 1e+15",
        "openvino-cpu-gru-padding-runs-into-h-n": "max_headroom = 1e+15",
        "onnx-reference-gru-ignores-activations-and-lengths": (
            "variant = 'ignores-activations-and-clip-and-sequence_lens'"
        ),
        "openvino-onnx-gru-layout-1-ignored-invariants": (
            "error_contains = 'Dimension `batch_size` is not matched between inputs'"
        ),
        "openvino-onnx-gru-layout-1-ignored-bidirectional-invariants": (
            "error_contains = \"must be evenly divisible by 'num_splits' attribute value: 2\""
        ),
        "keras-torch-float64-masked-matmul-in-float32": "error_level = 'float32'",
        "openvino-onnx-gru-layout-1-ignored-initial-h": "error_contains = 'Can not clone with new dims'",
        "openvino-onnx-gru-layout-1-ignored-initial-h-invariants": "error_contains = 'Can not clone with new dims'",
        "keras-jax-gru-16bit-nobias-scan-carry-float32": (
            "error_contains = 'scan body function carry input and carry output must have equal types'"
        ),
        "keras-jax-gru-16bit-nobias-scan-carry-float32-invariants": (
            "error_contains = 'scan body function carry input and carry output must have equal types'"
        ),
        "tflite-static-model-resized-gathers-out-of-bounds": "error_contains = 'gather index out of bounds'",
        "tflite-static-model-resized-gathers-out-of-bounds-invariants": "error_contains = 'gather index out of bounds'",
        "dynamo-export-degenerate-trace-specialised": "error_contains = 'Got invalid dimensions for input: x'",
        "dynamo-export-degenerate-trace-specialised-batch-first": "error_contains = 'Got invalid dimensions for input: x'",
        "dynamo-export-degenerate-trace-specialised-openvino": (
            "error_contains = 'The input tensor size is not equal to the model input type'"
        ),
        "dynamo-export-degenerate-trace-specialised-batch-first-openvino": (
            "error_contains = 'The input tensor size is not equal to the model input type'"
        ),
    }
