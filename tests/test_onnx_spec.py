"""The spec-built ONNX GRU: agrees with the oracle, and catches planted exporter-style bugs."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from backends.onnx.column import OnnxColumn
from backends.onnx.ort import ORT
from backends.onnx.reference import REFERENCE
from backends.onnx.source_spec import SpecOptions, SpecSource, spec_weights
from conformance.case import Case
from conformance.contract import UnsupportedCase
from conformance.data import case_data
from conformance.oracle import gru_reference

BI_H0 = Case(input_size=3, hidden_size=4, num_layers=2, bidirectional=True, initial_state=True, batch=3, seq_len=6)


def spec(runtime: str, options: SpecOptions | None = None) -> OnnxColumn:
    """A spec column; `options` plant a bug in the source, the runtime is the real one."""
    source = SpecSource(options) if options is not None else SpecSource()
    return OnnxColumn.of(source, ORT if runtime == "ort" else REFERENCE)


def max_errors(backend: OnnxColumn, case: Case, lbr: bool = True) -> tuple[float, float]:
    weights, inputs = case_data(case)
    got = backend.run(case, weights, inputs)
    want = gru_reference(case, weights, inputs, linear_before_reset=lbr)
    return (
        float(np.max(np.abs(got.output.astype(np.float64) - want.output))),
        float(np.max(np.abs(got.h_n.astype(np.float64) - want.h_n))),
    )


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("lengths", ["dense", "full"])
def test_float64_matches_oracle_in_reference_evaluator(batch_first: bool, lengths: str) -> None:
    case = Case(**{**BI_H0.as_dict(), "dtype": "float64", "batch_first": batch_first, "lengths": lengths})
    assert max(max_errors(spec("reference"), case)) < 1e-12


@pytest.mark.parametrize("lengths", ["dense", "sorted", "unsorted"])
def test_float32_matches_oracle_in_onnxruntime(lengths: str) -> None:
    case = Case(**{**BI_H0.as_dict(), "lengths": lengths})
    assert max(max_errors(spec("ort"), case)) < 1e-5


def test_gate_reordering_puts_update_gate_first() -> None:
    case = Case(input_size=2, hidden_size=2, dtype="float64")
    weights, _ = case_data(case)
    w = weights.tensors["weight_ih_l0"]
    assert np.array_equal(spec_weights(case, weights)["W_l0"][0], np.concatenate([w[2:4], w[0:2], w[4:6]]))


@pytest.mark.parametrize("runtime", ["ort", "reference"])
@pytest.mark.parametrize(
    "bug", [SpecOptions(gate_order="rzn"), SpecOptions(linear_before_reset=0)], ids=["torch-gate-order", "lbr0"]
)
def test_planted_exporter_bug_is_caught(runtime: str, bug: SpecOptions) -> None:
    """A model with torch's gate order or linear_before_reset=0 must be far off the oracle."""
    case = Case(**{**BI_H0.as_dict(), "dtype": "float64" if runtime == "reference" else "float32"})
    assert max(max_errors(spec(runtime), case)) < 1e-5  # the correct build passes ...
    assert max(max_errors(spec(runtime, bug), case)) > 1e-3  # ... the planted bug does not


def test_lbr0_build_is_the_other_gru_form() -> None:
    """linear_before_reset=0 is not noise: it is exactly the oracle's other published form."""
    case = Case(**{**BI_H0.as_dict(), "dtype": "float64"})
    assert max(max_errors(spec("reference", SpecOptions(linear_before_reset=0)), case, lbr=False)) < 1e-12


def test_reference_evaluator_ignores_sequence_lens() -> None:
    """Reproduces the registry entry onnx-reference-gru-ignores-sequence-lens; ORT on the same model is right."""
    case = Case(**{**BI_H0.as_dict(), "dtype": "float64", "lengths": "sorted"})
    assert max(max_errors(spec("reference"), case)) > 1e-3
    full = Case(**{**case.as_dict(), "lengths": "full"})
    assert max(max_errors(spec("reference"), full)) < 1e-12


@pytest.mark.parametrize(
    ("changes", "quote"),
    [
        ({"dtype": "float64"}, "GRU operator does not support double yet"),
        ({"dtype": "bfloat16"}, "NOT_IMPLEMENTED"),
        ({"batch_first": True}, "Batchwise recurrent operations (layout == 1) are not supported"),
    ],
)
def test_onnxruntime_refusals_are_unsupported_with_its_message(changes: dict[str, object], quote: str) -> None:
    case = Case(**{**BI_H0.as_dict(), **changes})
    weights, inputs = case_data(case)
    with pytest.raises(UnsupportedCase, match=r"onnxruntime .*") as raised:
        spec("ort").run(case, weights, inputs)
    assert quote in str(raised.value)
