"""OpenVINO as an ONNX runtime: its precision is read, not assumed; its known divergences reproduce.

Each divergence test reproduces an entry of conformance/declared/divergences.toml on the
spec-built model, next to the control that shows what does work.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("openvino")

import openvino as ov

from backends.onnx.column import OnnxColumn
from backends.onnx.openvino import OPENVINO, OpenVinoRuntime, executed_formats, narrowest
from backends.onnx.ort import bind_initializers
from backends.onnx.source_spec import SpecSource
from conformance.case import Case
from conformance.data import case_data
from conformance.dtypes import fmt
from conformance.engine import check
from conformance.oracle import gru_reference
from conformance.verdict import Verdict

DENSE = Case(input_size=3, hidden_size=4, num_layers=2, bidirectional=True, initial_state=True, batch=3, seq_len=6)
HAS_BF16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
needs_bf16 = pytest.mark.skipif(not HAS_BF16, reason="this CPU has no BF16: OpenVINO runs float32 here")


def column(runtime: OpenVinoRuntime = OPENVINO, precision: str = "strict") -> OnnxColumn:
    backend = OnnxColumn.of(SpecSource(), runtime)
    backend.configure(precision)
    return backend


def errors(backend: OnnxColumn, case: Case) -> tuple[float, float]:
    weights, inputs = case_data(case)
    got = backend.run(case, weights, inputs)
    want = gru_reference(case, weights, inputs)
    assert got.output.shape == want.output.shape and got.h_n.shape == want.h_n.shape
    return float(np.abs(got.output.astype(np.float64) - want.output).max()), float(
        np.abs(got.h_n.astype(np.float64) - want.h_n).max()
    )


def with_(**changes: object) -> Case:
    return Case(**{**DENSE.as_dict(), **changes})


def test_strict_mode_computes_float32_and_agrees_to_float32_rounding() -> None:
    assert OPENVINO.compute_format("cpu", "strict", "float32") == "float32"
    assert max(errors(column(), DENSE)) < 1e-6
    assert check(column(), DENSE).verdict == Verdict.PASS


def test_default_mode_computes_in_what_the_cpu_offers_and_is_judged_for_it() -> None:
    """Out of the box the plugin picks bfloat16 on a BF16 CPU: read from the compiled graph, then derived for."""
    stated = OPENVINO.compute_format("cpu", "default", "float32")
    assert stated == ("bfloat16" if HAS_BF16 else "float32")
    result = check(column(precision="default"), DENSE, precision="default")
    assert result.verdict == Verdict.PASS, result.reason
    assert result.tolerance["unit_roundoff"] == fmt(stated).unit_roundoff
    assert column(precision="default").describe()["precision"]["computes_in"]["float32"] == stated


@needs_bf16
def test_planted_bfloat16_in_strict_mode_fails() -> None:
    """A strict column whose properties ask for bf16: it says so, and strict mode judges it as float32 anyway."""

    class Bf16InStrict(OpenVinoRuntime):
        def properties(self, precision: str) -> dict[str, str]:
            return {"INFERENCE_PRECISION_HINT": "bf16"}

    planted = column(Bf16InStrict())
    assert planted.compute_format(DENSE) == "bfloat16"
    result = check(planted, DENSE)
    assert result.verdict == Verdict.FAIL and result.worst_headroom > 10, result.reason


@needs_bf16
def test_planted_misstated_format_is_an_error_not_a_wider_tolerance() -> None:
    """A column that states float32 while the plugin runs bf16: every compiled model is checked, so it errors."""

    class Misstating(OpenVinoRuntime):
        def compute_format(self, device: str, precision: str, dtype: str) -> str | None:
            return "float32"

    result = check(column(Misstating(), "default"), DENSE, precision="default")
    assert result.verdict == Verdict.ERROR
    assert "ran this float32 model in bfloat16, but the column states float32" in result.reason


def test_the_executed_format_is_read_from_the_compiled_graph() -> None:
    weights, _ = case_data(DENSE)
    prepared = SpecSource().prepared(DENSE, weights)
    core = ov.Core()
    model = core.read_model(bind_initializers(prepared.model, prepared.weight_feeds), b"")
    formats = executed_formats(core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}))
    assert any("RNNSeq" in node for node in formats) and narrowest(formats) == "float32"


def test_float64_runs_at_the_inference_precision() -> None:
    """Reproduces openvino-float64-computed-in-inference-precision: float64 in, float64 out, float32 inside."""
    case = with_(dtype="float64")
    assert OPENVINO.compute_format("cpu", "strict", "float64") == "float32"
    weights, inputs = case_data(case)
    assert column().run(case, weights, inputs).output.dtype == np.float64
    assert 1e-9 < max(errors(column(), case)) < 1e-6  # float32 rounding, not float64's 1e-16


def test_layout_1_is_misread() -> None:
    """Reproduces openvino-onnx-gru-layout-1-ignored (openvinotoolkit/openvino#37820): no refusal, a wrong
    shape or a crash at inference; the same model in layout 0 (time-major) is right."""
    case = with_(batch_first=True, initial_state=False, bidirectional=False, num_layers=1)
    weights, inputs = case_data(case)
    try:
        got = column().run(case, weights, inputs)
    except RuntimeError as error:
        assert "OpenVINO infer" in str(error)
    else:
        assert got.output.shape != (case.batch, case.seq_len, case.hidden_size)
    assert max(errors(column(), with_(initial_state=False, bidirectional=False, num_layers=1))) < 1e-6


@pytest.mark.parametrize("lengths", ["sorted", "unsorted"])
def test_sequence_lens_are_ignored_with_dynamic_shapes(lengths: str) -> None:
    """Reproduces openvino-cpu-gru-ignores-sequence-lens: the model as exported (dynamic batch and seq_len)
    runs every item for seq_len steps; the same model reshaped to static shapes honours the lengths."""
    case = with_(lengths=lengths)
    assert max(errors(column(), case)) > 0.1
    assert max(errors(column(), with_(lengths="full"))) < 1e-6
    weights, inputs = case_data(case)
    prepared = SpecSource().prepared(case, weights)
    core = ov.Core()
    model = core.read_model(bind_initializers(prepared.model, prepared.weight_feeds), b"")
    feeds = {"x": inputs.x, "h0": inputs.h0, "lengths": np.asarray(inputs.lengths, dtype=np.int64)}
    model.reshape({name: list(value.shape) for name, value in feeds.items()})
    static = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(feeds)
    expected = gru_reference(case, weights, inputs)
    assert np.abs(static["output"] - expected.output).max() < 1e-6


def test_bfloat16_goes_through_typed_tensors() -> None:
    """Why the runner wraps bf16 inputs: a plain ml_dtypes array fed to OpenVINO is misread
    (openvinotoolkit/openvino#35284); through `ov.Tensor(ov.Type.bf16)` the same values arrive intact."""
    import openvino.opset15 as ops

    x = ops.parameter([4], ov.Type.bf16, name="x")
    compiled = ov.Core().compile_model(ov.Model([ops.add(x, x)], [x]), "CPU")
    values = np.array([1.5, -2.25, 3.0, 0.125], dtype=fmt("bfloat16").numpy)
    from backends.onnx.openvino import from_tensor, to_tensor

    request = compiled.create_infer_request()
    request.infer({"x": to_tensor(values)})
    assert np.array_equal(from_tensor(request.get_output_tensor()).astype(np.float32), 2 * values.astype(np.float32))
    request.infer({"x": values})
    assert not np.array_equal(
        from_tensor(request.get_output_tensor()).astype(np.float32), 2 * values.astype(np.float32)
    )
