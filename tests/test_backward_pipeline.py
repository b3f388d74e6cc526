"""The backward check in the pipeline: attempt, judge, relabel, recorded as its own quantity.

1. `engine.check_backward` (attempt_backward -> judge_gradients -> relabel) gives the same kind of
   Result as the forward check, with `quantity = "backward"` and a rerun command that reruns it alone.
2. What the adapter does in `run_backward` is held to the contract exactly as `run` is: its refusal
   is `unsupported`, a crash or a wrong answer is `error` naming the broken contract, an overrun is
   `error` under the per-case time limit. A backend that can't differentiate is `unsupported`, saying why.
3. The registry: an entry may name its quantity; `checks` may name gradient checks ("grad *");
   an entry bounded by a size never explains a structural failure; keras-jax's float64 entry
   explains its gradients' float32-level error and nothing larger.
4. Records, summaries and the verdicts diff keep forward and backward apart.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from example_gru_backend.adapter import NumpyGru
from planted_backward import AutogradGru, DetachedH0

from conformance import divergences
from conformance.backend_summary import summarize
from conformance.case import Case
from conformance.compare_backward import compare_gradients
from conformance.data import Cotangents, Inputs, Weights, case_data
from conformance.divergences import Divergence, RegistryError
from conformance.engine import check, check_backward, oracle_gradients
from conformance.records import (
    BACKWARD,
    FORWARD,
    GRADIENT_CHECK_NAMES,
    RecordError,
    Result,
    ResultsWriter,
    read_records,
    read_results,
)
from conformance.time_limit import TimeLimit
from conformance.tolerance_backward import derive_backward
from conformance.verdict import Verdict
from reports.verdict_diff import changes, verdicts

CASE = Case(3, 4, bidirectional=True, batch=3, seq_len=5, lengths="sorted", initial_state=True)
FLOAT64 = Case(3, 4, num_layers=2, bidirectional=True, batch=3, seq_len=6, dtype="float64")


# --- 1. the composition ---------------------------------------------------------------------------


def test_a_correct_backward_passes_as_a_backward_result_with_its_own_rerun() -> None:
    pytest.importorskip("torch")
    result = check_backward(AutogradGru(), CASE)
    assert result.verdict == Verdict.PASS, result.reason
    assert result.quantity == BACKWARD and result.reference == "oracle"
    assert (
        result.rerun == f"pytest conformance --backends 'planted-grad-none[cpu]' --quantity backward --case {CASE.id}"
    )
    names = {c.name for c in result.checks}
    assert {"grad x", "grad x.padding", "grad h0", "grad weight_hh_l0_reverse"} <= names
    assert result.tolerance is not None and set(result.tolerance["atol"]) == set(oracle_gradients(CASE)[1])
    assert {"reference_s", "backend_s", "compare_s"} <= set(result.timing)
    forward = check(AutogradGru(), CASE)
    assert forward.quantity == FORWARD and forward.rerun.endswith(f"--quantity forward --case {CASE.id}")


def test_a_planted_backward_bug_fails_naming_the_tensor() -> None:
    pytest.importorskip("torch")
    result = check_backward(DetachedH0(), CASE)
    assert result.verdict == Verdict.FAIL and [c.name for c in result.failing_checks] == ["grad h0"]
    assert "grad h0: worst element at [layer=" in result.reason
    assert check(DetachedH0(), CASE).verdict == Verdict.PASS  # the forward check can't see it


def test_a_backend_without_run_backward_is_unsupported_saying_so() -> None:
    result = check_backward(NumpyGru(), CASE)
    assert result.verdict == Verdict.UNSUPPORTED and result.quantity == BACKWARD
    assert result.reason == (
        "numpy-example[cpu] does not differentiate: its adapter has no run_backward "
        "(conformance.contract.Differentiable)"
    )


def test_an_onnx_column_says_an_inference_runtime_computes_no_gradients() -> None:
    pytest.importorskip("onnxruntime")
    from backends.onnx.columns import spec_backends

    for column in spec_backends():
        result = check_backward(column, CASE)
        assert result.verdict == Verdict.UNSUPPORTED
        assert "inference runtime" in result.reason and "computes no gradients" in result.reason, result.reason


def test_an_unavailable_backend_is_skipped_for_backward_too() -> None:
    @dataclass
    class Missing(AutogradGru):
        family: str = "missing"

        def availability(self) -> Any:
            from conformance.contract import Availability

            return Availability(False, "libfoo is not importable", "pip install foo")

    result = check_backward(Missing(), CASE)
    assert result.verdict == Verdict.SKIPPED and "libfoo" in result.reason


# --- 2. the contract around run_backward ------------------------------------------------------------


@dataclass
class BackwardReturns(AutogradGru):
    """A correct backward whose answer is then broken one way (`what`)."""

    family: str = "hostile-backward"
    what: str = "right"

    def run_backward(self, case: Case, weights: Weights, inputs: Inputs, cotangents: Cotangents) -> Any:
        right = dict(super().run_backward(case, weights, inputs, cotangents))
        if self.what == "tuple":
            return tuple(right.values())
        if self.what == "none":
            return None
        if self.what == "list-value":
            return {**right, "x": right["x"].tolist()}
        if self.what == "object-array":
            return {**right, "x": np.array([object()] * 3)}
        if self.what == "int-key":
            return {**right, 0: right["x"]}
        if self.what == "torch-requires-grad":
            import torch

            return {**right, "x": torch.tensor(right["x"]).requires_grad_()}
        return right


@pytest.mark.parametrize(
    ("what", "reason"),
    [
        ("tuple", "run_backward returned tuple; expected a mapping of names (x, h0, state_dict names) to arrays"),
        ("none", "run_backward returned None; expected a mapping"),
        ("list-value", "run_backward returned x as list; expected a numpy array"),
        ("object-array", "run_backward returned x as an array of object; expected real numbers"),
        ("int-key", "run_backward returned a gradient keyed 0 (int); expected names (str)"),
        ("torch-requires-grad", "run_backward returned x as torch.Tensor, which numpy can't convert without loss"),
    ],
)
def test_what_run_backward_returns_is_checked_like_what_run_returns(what: str, reason: str) -> None:
    pytest.importorskip("torch")
    result = check_backward(BackwardReturns(what=what), CASE)
    assert result.verdict == Verdict.ERROR and result.reason.startswith(reason), result.reason
    assert check_backward(BackwardReturns(), CASE).verdict == Verdict.PASS  # the unbroken control


@dataclass
class BackwardRaises(AutogradGru):
    family: str = "hostile-backward-raises"
    error: type[BaseException] = RuntimeError

    def run_backward(self, case: Case, weights: Weights, inputs: Inputs, cotangents: Cotangents) -> Any:
        raise self.error(f"planted {self.error.__name__} in run_backward")


def test_a_crash_in_run_backward_is_an_error_and_a_refusal_is_unsupported() -> None:
    from conformance.contract import UnsupportedCase

    crash = check_backward(BackwardRaises(), CASE)
    assert crash.verdict == Verdict.ERROR
    assert crash.reason.startswith("RuntimeError: planted RuntimeError in run_backward (at ")
    assert crash.reason.endswith("in run_backward)")
    exits = check_backward(BackwardRaises(error=SystemExit), CASE)
    assert exits.verdict == Verdict.ERROR and exits.reason.startswith("SystemExit: planted SystemExit")
    refusal = check_backward(BackwardRaises(error=UnsupportedCase), CASE)
    assert refusal.verdict == Verdict.UNSUPPORTED and refusal.reason == "planted UnsupportedCase in run_backward"


def test_run_backward_gets_its_own_copies_of_data_and_cotangents() -> None:
    @dataclass
    class Scribbles(AutogradGru):
        family: str = "hostile-backward-scribbles"

        def run_backward(self, case: Case, weights: Weights, inputs: Inputs, cotangents: Cotangents) -> Any:
            gradients = super().run_backward(case, weights, inputs, cotangents)
            for array in (*weights.tensors.values(), inputs.x, cotangents.output, cotangents.h_n):
                array[...] = 0
            return gradients

    pytest.importorskip("torch")
    assert check_backward(Scribbles(), CASE).verdict == Verdict.PASS
    assert check_backward(AutogradGru(), CASE).verdict == Verdict.PASS  # nothing reached the next backend
    assert np.any(oracle_gradients(CASE)[0].output != 0) and np.any(case_data(CASE)[1].x != 0)


def test_a_hung_run_backward_is_an_error_and_the_backend_is_not_called_again() -> None:
    import threading

    @dataclass
    class HangsBackward(AutogradGru):
        family: str = "hostile-backward-hangs"
        release: threading.Event = dataclasses.field(default_factory=threading.Event)

        def run_backward(self, *args: Any) -> Any:
            self.release.wait(30)
            return {}

    hung = HangsBackward()
    limit = TimeLimit(0.3)
    try:
        first = check_backward(hung, CASE, limit=limit)
        assert first.verdict == Verdict.ERROR
        assert first.reason.startswith("run_backward exceeded the per-case time limit of 0.3 s (--case-timeout)")
        later = check(hung, CASE, limit=limit)  # the forward check of a hung backend isn't run either
        assert later.verdict == Verdict.ERROR
        assert later.reason.startswith(f"not run: this backend's run on case {CASE.id} (run_backward) exceeded")
    finally:
        hung.release.set()


# --- 3. the registry ------------------------------------------------------------------------------


def test_an_entry_naming_a_quantity_applies_to_that_quantity_only() -> None:
    pytest.importorskip("torch")
    backward_only = Divergence(
        "h0", ("planted-grad-detached-h0[*]",), "h0 detached", quantity=BACKWARD, max_headroom=1e9
    )
    result = check_backward(DetachedH0(), CASE, registry=[backward_only])
    assert result.verdict == Verdict.KNOWN_DIVERGENCE and result.divergence == "h0"
    # The forward check passes and the entry isn't for it: no unexpected_pass.
    assert check(DetachedH0(), CASE, registry=[backward_only]).verdict == Verdict.PASS
    forward_only = dataclasses.replace(backward_only, quantity=FORWARD)
    assert check_backward(DetachedH0(), CASE, registry=[forward_only]).verdict == Verdict.FAIL
    assert check(DetachedH0(), CASE, registry=[forward_only]).verdict == Verdict.UNEXPECTED_PASS
    both = dataclasses.replace(backward_only, quantity=None)
    assert check_backward(DetachedH0(), CASE, registry=[both]).verdict == Verdict.KNOWN_DIVERGENCE
    assert check(DetachedH0(), CASE, registry=[both]).verdict == Verdict.UNEXPECTED_PASS


def test_an_entry_limited_to_gradient_checks_explains_only_those() -> None:
    pytest.importorskip("torch")
    entry = Divergence("x", ("planted-grad-detached-h0[*]",), "r", checks=("grad x",), max_headroom=1e9)
    assert check_backward(DetachedH0(), CASE, registry=[entry]).verdict == Verdict.FAIL  # grad h0 isn't listed
    entry = dataclasses.replace(entry, checks=("grad *",))
    assert check_backward(DetachedH0(), CASE, registry=[entry]).verdict == Verdict.KNOWN_DIVERGENCE


def test_a_size_bounded_entry_never_explains_a_structural_failure() -> None:
    @dataclass
    class Forgets(AutogradGru):
        family: str = "planted-grad-forgets"

        def run_backward(self, *args: Any) -> Any:
            right = dict(super().run_backward(*args))
            del right["weight_hh_l0"]
            return right

    pytest.importorskip("torch")
    entry = Divergence("f", ("planted-grad-forgets[*]",), "r", checks=("grad *",), max_headroom=1e9)
    result = check_backward(Forgets(), CASE, registry=[entry])
    assert result.verdict == Verdict.FAIL
    assert "not the known divergence f: it explains a size of numerical error (max_headroom = 1e+09), and " in (
        result.reason
    )
    assert "grad weight_hh_l0 failed" in result.reason


ENTRY = '[[divergence]]\nid = "e"\nbackends = ["torch[*]"]\nreason = "r"\nmax_headroom = 10\n'


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('quantity = "gradients"', "quantity: expected one of 'forward', 'backward'"),
        ('checks = ["grad y"]', "'grad y' matches no check; the checks are output.shape"),
        ('checks = ["grad weight_hh_l10"]', "layers 0 to 9"),
    ],
)
def test_registry_quantity_and_gradient_check_names_are_validated(tmp_path: Path, extra: str, message: str) -> None:
    registry = tmp_path / "divergences.toml"
    registry.write_text(ENTRY + extra + "\n", encoding="utf-8")
    with pytest.raises(RegistryError, match=message.replace("(", r"\(")):
        divergences.load(registry)


def test_registry_accepts_gradient_check_patterns_and_quantities(tmp_path: Path) -> None:
    registry = tmp_path / "divergences.toml"
    checks = '["grad *", "grad weight_hh_l1_reverse", "grad x.padding", "grad bias_*"]'
    registry.write_text(ENTRY + f'quantity = "backward"\nchecks = {checks}\n', encoding="utf-8")
    (entry,) = divergences.load(registry)
    assert entry.quantity == BACKWARD and entry.as_dict()["quantity"] == BACKWARD
    assert entry.checks == ("grad *", "grad weight_hh_l1_reverse", "grad x.padding", "grad bias_*")


def test_an_entry_for_a_quantity_the_run_does_not_check_is_warned_about() -> None:
    entry = Divergence("b", ("torch[*]",), "r", quantity=BACKWARD, max_headroom=10.0)
    assert divergences.unmatchable([entry], {}, ["torch"], (FORWARD,)) == [
        "divergence entry 'b': quantity = 'backward', and this run checks only forward (--quantity)"
    ]
    assert divergences.unmatchable([entry], {}, ["torch"]) == []


def test_the_registry_knows_every_gradient_check_name_the_comparison_makes() -> None:
    case = Case(3, 4, num_layers=3, bidirectional=True, batch=2, seq_len=3, lengths="unsorted", initial_state=True)
    _, expected = oracle_gradients(case)
    lengths = case_data(case)[1].lengths
    names = {c.name for c in compare_gradients(case, expected, expected, derive_backward(case), lengths)}
    assert {"grad x.shape", "grad h0.dtype", "grad x.padding", "grad weight_ih_l2_reverse"} <= names
    assert names <= set(GRADIENT_CHECK_NAMES), sorted(names - set(GRADIENT_CHECK_NAMES))


@dataclass
class InFloat32(AutogradGru):
    """A float64 GRU (and backward) that computes in float32 inside: float32-level error, as keras-jax's tanh."""

    family: str = "keras-like"

    def run_backward(self, case: Case, weights: Weights, inputs: Inputs, cotangents: Cotangents) -> Any:
        narrow = dataclasses.replace(case, dtype="float32")

        def f32(array: np.ndarray | None) -> np.ndarray | None:
            return None if array is None else np.asarray(array, np.float32)

        gradients: Mapping[str, np.ndarray] = super().run_backward(
            narrow,
            Weights({k: np.asarray(v, np.float32) for k, v in weights.tensors.items()}),
            Inputs(f32(inputs.x), f32(inputs.h0), inputs.lengths),  # type: ignore[arg-type]
            Cotangents(np.asarray(cotangents.output, np.float32), np.asarray(cotangents.h_n, np.float32)),
        )
        return {name: np.asarray(g, np.float64) for name, g in gradients.items()}


@dataclass
class InFloat32AndH0Detached(InFloat32, DetachedH0):
    """The same, with a real backward bug on top."""

    family: str = "keras-like"


KERAS_LIKE = Divergence(
    "keras-like-float64-tanh-in-float32",
    ("keras-like[*]",),
    "tanh computed in float32",
    when={"dtype": ("float64",)},
    checks=("output", "h_n", "grad *"),
    error_level="float32",
)


def test_float32_level_gradients_in_float64_are_the_known_divergence_and_a_real_bug_is_not() -> None:
    pytest.importorskip("torch")
    case = dataclasses.replace(FLOAT64, initial_state=True)
    known = check_backward(InFloat32(), case, registry=[KERAS_LIKE])
    assert known.verdict == Verdict.KNOWN_DIVERGENCE, known.reason
    assert known.worst_headroom is not None and 1 < known.worst_headroom <= 2.0**29
    bug = check_backward(InFloat32AndH0Detached(), case, registry=[KERAS_LIKE])
    assert bug.verdict == Verdict.FAIL and bug.worst_headroom is not None and bug.worst_headroom > 2.0**29
    assert "not the known divergence keras-like-float64-tanh-in-float32: it explains float32-level error" in (
        bug.reason
    )


@pytest.mark.parametrize("base", [FLOAT64, Case(5, 3, num_layers=3, batch_first=True, batch=2, seq_len=9)])
def test_keras_jax_float64_gradients_are_the_shipped_known_divergence(base: Case) -> None:
    pytest.importorskip("jax")
    from backends.keras_jax import KerasJaxGru  # sets KERAS_BACKEND=jax before keras is imported
    from conformance.diagnosis import registry_variant_ids

    registry = divergences.load(variants=registry_variant_ids())
    case = dataclasses.replace(base, dtype="float64")
    result = check_backward(KerasJaxGru(), case, registry=registry)
    assert result.verdict == Verdict.KNOWN_DIVERGENCE, result.reason
    assert result.divergence == "keras-jax-float64-tanh-in-float32"
    assert result.worst_headroom is not None and result.worst_headroom <= 2.0**29
    float32 = check_backward(KerasJaxGru(), dataclasses.replace(base, dtype="float32"), registry=registry)
    assert float32.verdict == Verdict.PASS, float32.reason  # the entry is about float64 only


# --- 4. records, summaries, the verdicts diff -----------------------------------------------------


def _write(path: Path, results: list[Result]) -> Path:
    writer = ResultsWriter(path, "run")
    for result in results:
        writer.write(result.as_record())
    writer.close()
    return path


def _result(quantity: str, verdict: Verdict = Verdict.PASS, backend: str = "torch[cpu]") -> Result:
    return Result(CASE, backend, "torch", "cpu", verdict, quantity=quantity)


def test_every_record_says_its_quantity_and_an_old_record_is_forward(tmp_path: Path) -> None:
    path = _write(tmp_path / "r.jsonl", [_result(FORWARD), _result(BACKWARD, Verdict.FAIL)])
    records = [r for r in read_records(path) if r["kind"] == "result"]
    assert [r["quantity"] for r in records] == [FORWARD, BACKWARD]
    assert [r.quantity for r in read_results([path])] == [FORWARD, BACKWARD]
    old = {k: v for k, v in records[1].items() if k != "quantity"}
    assert Result.from_record(old).quantity == FORWARD


def test_a_record_with_an_unknown_quantity_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    record = {**_result(BACKWARD).as_record(), "quantity": "sideways", "run_id": "r", "worker": "main"}
    import json

    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    with pytest.raises(RecordError, match="quantity: expected one of 'forward', 'backward'"):
        list(read_records(path))


def test_summaries_keep_a_backends_forward_and_backward_apart() -> None:
    records = [
        {**_result(BACKWARD, Verdict.FAIL).as_record()},
        {**_result(FORWARD).as_record()},
        {**_result(FORWARD, backend="jax[cpu]").as_record()},
    ]
    found = summarize(records)
    assert [(s.label, dict(s.counts)) for s in found] == [
        ("torch[cpu]", {"pass": 1}),
        ("torch[cpu] (backward)", {"fail": 1}),
        ("jax[cpu]", {"pass": 1}),
    ]


def test_the_verdicts_diff_is_keyed_by_quantity(tmp_path: Path) -> None:
    old = _write(tmp_path / "old.jsonl", [_result(FORWARD)])
    new = _write(tmp_path / "new.jsonl", [_result(FORWARD), _result(BACKWARD, Verdict.FAIL)])
    assert changes(verdicts([old]), verdicts([new])) == [f"torch[cpu]  {CASE.id}  backward  - -> fail"]
    assert changes(verdicts([old], FORWARD), verdicts([new], FORWARD)) == []
    moved = _write(tmp_path / "moved.jsonl", [_result(FORWARD, Verdict.FAIL), _result(BACKWARD, Verdict.FAIL)])
    assert changes(verdicts([new], FORWARD), verdicts([moved], FORWARD)) == [
        f"torch[cpu]  {CASE.id}  forward  pass -> fail"
    ]


ZERO = Case(3, 4, batch=3, seq_len=5, lengths="zero", initial_state=True)


def _full_for_empty(lengths: np.ndarray | None, steps: int) -> np.ndarray | None:
    """`length or seq_len`: an item of length 0 runs every step."""
    return None if lengths is None else np.where(np.asarray(lengths) == 0, steps, lengths)


@dataclass
class EmptyItemRunsFullyGrad(AutogradGru):
    """Forward and backward both run a length-0 item through every step: a convention, consistently."""

    family: str = "planted-grad-empty-runs"

    def forward(self, case: Case, module: Any, x: Any, h0: Any, lengths: np.ndarray | None) -> tuple[Any, Any]:
        return self.packed(case, module, x, h0, _full_for_empty(lengths, case.seq_len))


@dataclass
class PolicyForwardGradientOfAnother(EmptyItemRunsFullyGrad):
    """Planted: the forward follows the zero-length policy, the gradients are of the run-fully function."""

    family: str = "planted-grad-policy-forward"

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> Any:
        return NumpyGru().run(case, weights, inputs)


def test_zero_length_gradients_follow_the_forward_convention_and_only_that() -> None:
    """A backend whose forward returns a convention for an item of length 0 differentiates that function: its
    backward is the same convention. One whose forward follows the policy gets no such allowance."""
    consistent = check_backward(EmptyItemRunsFullyGrad(), ZERO)
    assert check(EmptyItemRunsFullyGrad(), ZERO).verdict == Verdict.CONVENTION
    assert consistent.verdict == Verdict.CONVENTION and "item of length 0" in consistent.reason
    planted = check_backward(PolicyForwardGradientOfAnother(), ZERO)
    assert check(PolicyForwardGradientOfAnother(), ZERO).verdict == Verdict.PASS
    assert planted.verdict == Verdict.FAIL


def test_a_wrapped_library_error_is_quoted_by_the_sentence_under_the_wrapper() -> None:
    """Keras puts the library's error, in bold, under "Exception encountered when calling X.call()."; a registry
    entry's `error_contains` matches that sentence, so the quote must hold it. A plain multi-line error keeps
    only its first line (the counterpart)."""
    from conformance.contract import first_line

    wrapped = TypeError(
        "Exception encountered when calling GRU.call().\n\n\x1b[1mscan body function carry input and carry output "
        "must have equal types, but they differ:\nThe input carry h has type float16[1,6]\x1b[0m\n\nArguments..."
    )
    assert first_line(wrapped) == (
        "TypeError: Exception encountered when calling GRU.call(). scan body function carry input and carry output "
        "must have equal types, but they differ:"
    )
    assert first_line(ValueError("first\nsecond")) == "ValueError: first"
    assert first_line(RuntimeError("")) == "RuntimeError"


def test_the_backward_check_runs_a_backend_only_if_it_differentiates_in_pytorchs_form() -> None:
    """What decides whether anything is built or planned for a backend's backward check: a differentiating
    backend in PyTorch's form is checked; one that declares another form, or doesn't differentiate, is not."""
    from conformance.contract import checks_backward
    from conformance.forms import Form

    assert checks_backward(AutogradGru())
    other_form = AutogradGru()
    other_form.form = Form(linear_before_reset=False)  # type: ignore[attr-defined]
    assert not checks_backward(other_form)
    assert not checks_backward(NumpyGru())  # no run_backward
