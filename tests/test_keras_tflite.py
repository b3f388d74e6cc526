"""Keras on TensorFlow and on PyTorch, and TFLite: each in its worker process, with the verdicts they earn.

The e2e tests need the `[tensorflow]` extra (and torch); they skip, saying so, where it isn't
installed. What they pin down: the masked-output convention of a unidirectional Keras GRU (and
its absence in `Bidirectional`), keras-torch's float64 matmuls under a mask (registered,
keras#23704) against keras-tensorflow's float64, TFLite's numbers where the converter and the
interpreter accept the model (the bias is not added twice: tensorflow#54507 doesn't reproduce),
and their refusals quoted where they don't.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from backends.tflite import converter_message
from conformance.case import Case
from conformance.engine import check, check_backward
from conformance.out_of_process import close_all, in_worker
from conformance.verdict import Verdict

needs_tensorflow = pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("ai_edge_litert") is None,
    reason="needs the [tensorflow] extra: pip install -e '.[tensorflow]' -c constraints.txt",
)

UNI_SORTED = "I5H6-L1-uni-tm-bias-noh0-B3T5-sorted-float32-xsame-s0"
BI_SORTED = "I5H6-L1-bi-tm-bias-h0-B3T5-sorted-float32-xsame-s0"
F64_SORTED = "I5H6-L2-bi-bf-bias-h0-B3T5-sorted-float64-xsame-s0"
F64_DENSE = "I5H6-L2-uni-tm-bias-h0-B3T5-dense-float64-xsame-s0"
F32_OTHER_SHAPE = "I5H6-L1-uni-bf-bias-noh0-B3T5-dense-float32-xother-s0"

EXPECTED = {
    # Keras's default zero_output_for_mask=False: a unidirectional GRU repeats its last valid output at
    # padded steps (convention); Bidirectional gives zeros there (pass). TFLite runs the same layers.
    UNI_SORTED: {
        "keras-tensorflow[cpu]": "convention",
        "keras-torch[cpu]": "convention",
        "tflite/builtins[cpu]": "convention",
    },
    BI_SORTED: {"keras-tensorflow[cpu]": "pass", "keras-torch[cpu]": "pass", "tflite/builtins[cpu]": "pass"},
    F64_SORTED: {
        "keras-tensorflow[cpu]": "pass",
        "keras-torch[cpu]": "known_divergence",
        "tflite/builtins[cpu]": "unsupported",
    },
    F64_DENSE: {"keras-tensorflow[cpu]": "pass", "keras-torch[cpu]": "pass", "tflite/builtins[cpu]": "unsupported"},
    F32_OTHER_SHAPE: {"tflite/builtins[cpu]": "unsupported"},
}


def test_the_converter_is_quoted_by_its_own_sentence_not_an_mlir_location() -> None:
    lowering = (
        "<unknown>:0: error: loc(callsite(fused[...])): 'tf.TensorListReserve' op requires element_shape\n"
        "<unknown>:0: note: loc(fused[...]): called from\n"
        "<unknown>:0: error: Lowering tensor list ops is failed. Please consider using Select TF ops"
    )
    assert (
        converter_message(ValueError(lowering))
        == "ValueError: Lowering tensor list ops is failed. Please consider using Select TF ops"
    )
    unsupported = (
        "<stdin>:8:1: error: 'tf.Mul' op is neither a custom op nor a flex op\n"
        "<unknown>:0: error: failed while converting: 'main': \n"
        "Some ops are not supported by the native TFLite runtime, you can enable TF kernels fallback using TF Select.\n"
        '\ttf.MatMul(tensor<3x5xf64>, tensor<5x18xf64>) -> (tensor<3x18xf64>) : {device = ""}\n'
    )
    assert converter_message(ValueError(unsupported)) == (
        "ValueError: Some ops are not supported by the native TFLite runtime, you can enable TF kernels fallback "
        "using TF Select. (first listed: tf.MatMul(tensor<3x5xf64>, tensor<5x18xf64>) -> (tensor<3x18xf64>))"
    )
    assert converter_message(ValueError("plain words\nmore")) == "ValueError: plain words"


@pytest.mark.e2e
@needs_tensorflow
def test_keras_on_tensorflow_runs_in_its_worker_and_keras_on_jax_stays_here() -> None:
    """The point of the worker: TensorFlow never enters the suite's process, so Keras on JAX still runs in it."""
    from backends.keras_jax import KerasJaxGru
    from backends.keras_native import tensorflow_backends

    case = Case.from_id(BI_SORTED)
    # Keras on JAX itself imports tensorflow for utilities when it is installed (its vjp path does), so
    # an earlier test may have loaded it: what this test can say is that the worker's run loaded nothing.
    had_tensorflow = "tensorflow" in sys.modules
    try:
        assert check(in_worker(next(tensorflow_backends())), case).verdict == Verdict.PASS
        assert had_tensorflow or "tensorflow" not in sys.modules
        if importlib.util.find_spec("jax") is not None:
            assert check(KerasJaxGru(), case).verdict == Verdict.PASS
            assert sys.modules["keras"].backend.backend() == "jax"  # this process's Keras stayed on JAX
    finally:
        close_all()


@pytest.mark.e2e
@needs_tensorflow
def test_the_new_stacks_are_unsupported_for_backward_with_the_reason() -> None:
    """This round they don't differentiate (no `run_backward`, and the worker protocol carries no
    cotangents): the gradient check must say unsupported and why, never pass, fail or crash."""
    from backends import tflite
    from backends.keras_native import tensorflow_backends, torch_backends

    case = Case.from_id(BI_SORTED)
    try:
        for local in [*tensorflow_backends(), *torch_backends(), *tflite.backends()]:
            result = check_backward(in_worker(local), case)
            if result.verdict == Verdict.SKIPPED:  # tflite/tf-ops: unavailable here (no Flex delegate)
                assert "smallest case" in result.reason, (local.name, result.reason)
                continue
            assert result.verdict == Verdict.UNSUPPORTED, (local.name, result.verdict, result.reason)
            assert "does not differentiate" in result.reason, (local.name, result.reason)
    finally:
        close_all()


@pytest.mark.e2e
@needs_tensorflow
def test_the_new_stacks_earn_their_verdicts_with_their_reasons(suite, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run = suite("--backends", "keras-tensorflow,keras-torch,tflite", *[a for c in EXPECTED for a in ("--case", c)])
    assert run.returncode in (0, 1), run.stdout[-3000:] + run.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    got = {(r["rerun"].split("--case ")[1].split()[0], r["backend"]): r for r in records if r["kind"] == "result"}
    for case, verdicts in EXPECTED.items():
        for backend, verdict in verdicts.items():
            assert got[case, backend]["verdict"] == verdict, (case, backend, got[case, backend]["reason"])
    assert got[F64_SORTED, "keras-torch[cpu]"]["divergence"] == "keras-torch-float64-masked-matmul-in-float32"
    assert (
        "Some ops are not supported by the native TFLite runtime" in got[F64_SORTED, "tflite/builtins[cpu]"]["reason"]
    )
    # converted at the trace shape (batch 4, seq_len 7) with static shapes, then resized to the run shape:
    # LiteRT refuses to prepare the resized model
    assert "the LiteRT interpreter refuses" in got[F32_OTHER_SHAPE, "tflite/builtins[cpu]"]["reason"]
    assert all(  # no Flex delegate in LiteRT's Python interpreter: the column is unavailable, quoting it
        got[case, "tflite/tf-ops[cpu]"]["verdict"] == "skipped" and "Flex" in got[case, "tflite/tf-ops[cpu]"]["reason"]
        for case in EXPECTED
    ), [got[case, "tflite/tf-ops[cpu]"]["reason"] for case in EXPECTED]
    notes = {r["backend"]: r["notes"] for r in records if r["kind"] == "backend"}
    assert notes["keras-torch[cpu]"]["worker_process"]["env"]["KERAS_BACKEND"] == "torch"
    assert "converter" in notes["tflite/builtins[cpu]"]  # tf-ops is unavailable here: no notes to describe
    assert notes["keras-tensorflow[cpu]"]["keras_backend"] == "tensorflow"


@pytest.mark.e2e
@needs_tensorflow
def test_a_tflite_conversion_litert_cannot_run_at_all_is_unavailable_quoting_it() -> None:
    """LiteRT's pip build has no Select TF ops (no Flex delegate): tflite/tf-ops can run nothing here, so it is
    unavailable with LiteRT's words, not a column of refusals that checks nothing. tflite/builtins, tried the
    same way (a real smallest case), stays available: the counterpart."""
    from backends import tflite

    try:
        found = {local.name: in_worker(local).availability() for local in tflite.backends()}
    finally:
        close_all()
    tf_ops = next(a for name, a in found.items() if "tf-ops" in name)
    builtins = next(a for name, a in found.items() if "builtins" in name)
    assert not tf_ops.available and "Select TensorFlow op" in tf_ops.reason, tf_ops
    assert builtins.available, builtins


def test_a_conversion_is_keyed_by_everything_it_depends_on() -> None:
    import numpy as np

    from backends.flatbuffer_store import model_key
    from conformance.data import case_data

    case = Case.from_id(BI_SORTED)
    weights, _ = case_data(case)
    parts = {"conversion": "builtins", "structure": case.structure, "trace": case.export_dims}
    key = model_key(parts, weights.tensors)
    assert key == model_key(dict(parts), {k: v.copy() for k, v in weights.tensors.items()})  # deterministic
    nudged = dict(weights.tensors)
    name = sorted(nudged)[0]
    nudged[name] = np.nextafter(nudged[name], np.inf)  # one ulp on every element of one tensor
    assert model_key(parts, nudged) != key  # other weights never load this model
    assert model_key({**parts, "trace": (4, 7)}, weights.tensors) != key
    assert model_key({**parts, "conversion": "tf-ops"}, weights.tensors) != key


@needs_tensorflow
def test_a_later_run_loads_the_stored_flatbuffer_instead_of_converting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker inherits the cache root; a second worker finds the model the first converted (its file is not
    rewritten), and the stored file is really what runs: a damaged one makes the case fail, not convert again."""
    from backends import tflite

    close_all()  # a worker started by an earlier test has another cache root in its environment
    monkeypatch.setenv("GRU_CONFORMANCE_CACHE", str(tmp_path))
    case = Case.from_id(BI_SORTED)
    builtins = next(local for local in tflite.backends() if local.conversion == "builtins")
    try:
        assert check(in_worker(builtins), case).verdict == Verdict.PASS
        stored = {p: p.stat().st_mtime_ns for p in (tmp_path / "tflite" / "builtins").glob("*.tflite")}
        assert stored  # the smallest case (availability) and this one
        close_all()
        assert check(in_worker(builtins), case).verdict == Verdict.PASS
        assert {p: p.stat().st_mtime_ns for p in stored} == stored  # loaded, not converted and rewritten
        close_all()
        for path in stored:
            path.write_bytes(b"not a flatbuffer")
        damaged = check(in_worker(builtins), case)
        assert damaged.verdict in (Verdict.ERROR, Verdict.UNSUPPORTED), damaged
    finally:
        close_all()
