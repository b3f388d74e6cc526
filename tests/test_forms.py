"""Backends that declare another GRU form are judged in it: haiku, Keras reset_after=False, the spec-built
ONNX node with linear_before_reset=0, and with ONNX's activations and clip; what they ignore is named."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from example_gru_backend.adapter import NumpyGru

from conformance.case import Case
from conformance.contract import declared_form
from conformance.data import case_data
from conformance.engine import ORACLE, check
from conformance.forms import PYTORCH, SIGMOID, TANH, Activation, Form, gru
from conformance.oracle import gru_reference
from conformance.pipeline import Reference
from conformance.verdict import Verdict

OTHER = Form(linear_before_reset=False)
BI_H0 = Case(3, 4, num_layers=2, bidirectional=True, initial_state=True, batch=3, seq_len=5)
BF_NOH0 = Case(3, 4, batch_first=True, batch=2, seq_len=4, dtype="float64")


def test_forms_are_the_oracle_unless_they_say_otherwise() -> None:
    weights, inputs = case_data(BI_H0)
    explicit = Form(gate_activation=SIGMOID, candidate_activation=TANH, clip=None)
    assert explicit == PYTORCH
    assert np.array_equal(gru(BI_H0, weights, inputs, explicit).output, gru_reference(BI_H0, weights, inputs).output)
    other = gru(BI_H0, weights, inputs, OTHER)
    assert np.array_equal(other.h_n, gru_reference(BI_H0, weights, inputs, linear_before_reset=False).h_n)


def test_hard_sigmoid_and_clip_are_onnx_s() -> None:
    keras = Activation("HardSigmoid", alpha=1 / 6, beta=0.5)
    v = np.array([-4.0, -3.0, 0.0, 1.5, 3.0, 9.0])
    assert np.allclose(keras(v), np.minimum(np.maximum(v + 3, 0), 6) / 6)  # Keras 3: relu6(x + 3) / 6
    assert np.allclose(Activation("HardSigmoid")(v), np.clip(0.2 * v + 0.5, 0, 1))  # ONNX's default
    weights, inputs = case_data(BI_H0)
    clipped = gru(BI_H0, weights, inputs, Form(clip=1e-9))  # every pre-activation is ~0: r = z = 1/2, n = 0
    assert np.abs(clipped.h_n).max() < np.abs(inputs.h0).max()
    with pytest.raises(ValueError, match="not modelled"):
        Activation("Softsign")(v)


@dataclass
class DeclaresOtherForm(NumpyGru):
    """Declares the reset-before-matmul form but computes PyTorch's: the declaration is what is checked."""

    family: str = "planted-declares-other-form"
    form: Form = OTHER


def test_a_declared_form_is_the_truth_and_ignoring_it_is_named() -> None:
    backend = DeclaresOtherForm()
    assert declared_form(backend) == OTHER and declared_form(NumpyGru()) == PYTORCH
    result = check(backend, BI_H0)
    assert result.verdict == Verdict.FAIL
    assert result.diagnosis is not None and result.diagnosis["variants"][0]["id"] == "ignores-linear_before_reset"
    assert "likely mistake: ignores-linear_before_reset" in result.reason


def test_stored_vectors_hold_only_pytorch_s_form() -> None:
    vectors = Reference("fixtures/vectors/pairwise", ORACLE.load)
    result = check(DeclaresOtherForm(), BI_H0, vectors)
    assert result.verdict == Verdict.UNSUPPORTED and "holds PyTorch's GRU form only" in result.reason


@pytest.mark.parametrize("case", [BI_H0, BF_NOH0], ids=["bi-h0-float32", "bf-noh0-float64"])
def test_haiku_is_the_other_form(case: Case) -> None:
    pytest.importorskip("haiku")
    from backends.haiku_gru import HaikuGru

    result = check(HaikuGru(), case)
    assert result.verdict == Verdict.PASS, result.reason
    if case.dtype == "float64":  # computed in float64 through: far inside the tolerance (folded sums round once)
        assert result.worst_headroom is not None and result.worst_headroom < 0.1


def test_haiku_refuses_packed_batches_and_its_converter_round_trips() -> None:
    pytest.importorskip("haiku")
    from backends.converters import haiku_gru as conv
    from backends.haiku_gru import HaikuGru

    packed = Case(3, 4, batch=3, seq_len=5, lengths="zero")
    assert check(HaikuGru(), packed).verdict == Verdict.UNSUPPORTED
    weights, _ = case_data(Case(3, 4, num_layers=2, bidirectional=True, dtype="float64"))
    params = conv.torch_to_haiku(weights.tensors)
    assert set(params) == {"gru_l0", "gru_l0_reverse", "gru_l1", "gru_l1_reverse"}
    back = conv.haiku_to_torch(params)
    for name, value in weights.tensors.items():
        if name.startswith("weight"):
            assert np.array_equal(back[name], value), name  # negating the update gate twice is exact
    ih, hh = weights.tensors["bias_ih_l0"], weights.tensors["bias_hh_l0"]
    assert np.array_equal(back["bias_ih_l0"], ih + hh) and not back["bias_hh_l0"].any()  # only sums survive
    assert np.array_equal(conv.torch_to_haiku(back)["gru_l1"]["b"], params["gru_l1"]["b"])


def test_keras_reset_after_false_is_the_other_form() -> None:
    pytest.importorskip("jax")
    from backends.converters import keras_gru as conv
    from backends.keras_jax import KerasJaxGru

    if not KerasJaxGru().availability().available:
        pytest.skip(KerasJaxGru().availability().describe())

    backend = KerasJaxGru(family="keras-jax-reset-after-false", reset_after=False)
    assert declared_form(backend) == OTHER and declared_form(KerasJaxGru()) == PYTORCH
    assert check(backend, BI_H0).verdict == Verdict.PASS
    weights, _ = case_data(BI_H0)
    bias = conv.torch_to_keras(weights.tensors, reset_after=False)[0][2]
    assert bias.shape == (12,)  # one (3H,) bias per direction: the folded sums
    back = conv.keras_to_torch(conv.torch_to_keras(weights.tensors, reset_after=False), True)
    assert np.array_equal(back["weight_hh_l1_reverse"], weights.tensors["weight_hh_l1_reverse"])


@pytest.mark.parametrize("runtime", ["ort", "reference"])
def test_the_spec_node_in_onnx_s_default_form(runtime: str) -> None:
    pytest.importorskip("onnxruntime")
    from backends.onnx.column import OnnxColumn
    from backends.onnx.ort import ORT
    from backends.onnx.reference import REFERENCE
    from backends.onnx.source_spec_lbr0 import SpecLbr0Source

    column = OnnxColumn.of(SpecLbr0Source(), ORT if runtime == "ort" else REFERENCE)
    assert declared_form(column) == OTHER
    assert check(column, BI_H0).verdict == Verdict.PASS


def test_activations_and_clip_honoured_by_onnxruntime_ignored_by_the_reference_evaluator() -> None:
    pytest.importorskip("onnxruntime")
    from backends.onnx.column import OnnxColumn
    from backends.onnx.ort import ORT
    from backends.onnx.reference import REFERENCE
    from backends.onnx.source_spec_activations import SpecActivationsSource

    source = SpecActivationsSource()
    assert source.form.clip == 0.5 and source.form.gate_activation.name == "HardSigmoid"
    weights, inputs = case_data(BI_H0)
    # The attributes matter on this data: the declared form is far from PyTorch's.
    assert (
        np.abs(gru(BI_H0, weights, inputs, source.form).output - gru_reference(BI_H0, weights, inputs).output).max()
        > 0.05
    )
    assert check(OnnxColumn.of(source, ORT), BI_H0).verdict == Verdict.PASS
    ignored = check(OnnxColumn.of(source, REFERENCE), BI_H0)
    assert ignored.verdict == Verdict.FAIL
    assert ignored.diagnosis is not None
    assert [v["id"] for v in ignored.diagnosis["variants"]] == ["ignores-activations-and-clip"]
