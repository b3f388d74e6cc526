"""Backends differentiate their own GRU, and the gradient check explains itself.

1. Every differentiable backend (torch autograd; flax linen, nnx, equinox, keras-jax through
   the jitted vjp of their forward program) passes the backward check against the float64
   BPTT oracle at the derived tolerance, on a spread of cases; dL/dx at padded positions is
   exactly zero. Keras on float64 is the exception it is in the forward check (tanh computed
   in float32): its gradients carry float32-sized errors, and the check says so.
2. Backends that can't differentiate (ONNX runtimes) or can't hold a parameter (nnx, b_hn)
   are unsupported, with the reason.
3. Planted gradient bugs (`tests/planted_backward.py`, and a wrong fold adjoint in the real
   JAX converters) fail, and the failing check names the tensor and the worst element.
4. One compiled vjp program per signature, stored with `jax.export` and in the persistent cache: a new
   process loads it without tracing the library and compiles nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from planted_backward import (
    AutogradGru,
    DetachedH0,
    FoldedBiasOneSide,
    GradientThroughPadding,
    ReverseGradientIgnoresLengths,
)

from conformance.case import Case
from conformance.compare import valid_mask
from conformance.compare_backward import gradient_index
from conformance.data import case_data, make_cotangents
from conformance.engine import check_backward
from conformance.oracle_backward import reference_gradients
from conformance.records import Check, Result
from conformance.verdict import Verdict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _factory(module: str, cls: str, needs: str) -> Callable[[], Any]:
    def make() -> Any:
        pytest.importorskip(needs)
        import importlib

        return getattr(importlib.import_module(module), cls)()

    return make


FACTORIES: dict[str, Callable[[], Any]] = {
    "torch": _factory("backends.torch_eager", "TorchGru", "torch"),
    "flax-linen": _factory("backends.flax_linen", "FlaxLinenGru", "flax"),
    "flax-nnx": _factory("backends.flax_nnx", "FlaxNnxGru", "flax"),
    "equinox": _factory("backends.equinox_gru", "EquinoxGru", "equinox"),
    "keras-jax": _factory("backends.keras_jax", "KerasJaxGru", "jax"),
}
_BACKENDS: dict[str, Any] = {}


def backend(family: str) -> Any:
    """One adapter per family for the module, so its jit cache is shared as in a run."""
    if family not in _BACKENDS:
        _BACKENDS[family] = FACTORIES[family]()
    return _BACKENDS[family]


SPREAD = [
    Case(3, 4, num_layers=2, bidirectional=True, batch=3, seq_len=5, lengths="sorted", initial_state=True),
    Case(5, 3, num_layers=3, bidirectional=True, batch_first=True, batch=4, seq_len=6, lengths="unsorted"),
    Case(4, 5, num_layers=2, bias=False, batch_first=True, batch=2, seq_len=7, initial_state=True),
    Case(2, 5, bidirectional=True, batch=3, seq_len=1, lengths="full"),
]


def case_for(family: str, case: Case, **changes: Any) -> Case:
    """nnx holds no b_hn, so it runs the bias=False version of every case."""
    return dataclasses.replace(case, **changes, **({"bias": False} if family == "flax-nnx" else {}))


def checks_by_name(result: Result) -> dict[str, Check]:
    return {c.name: c for c in result.checks}


# --- 1. the real backends


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("base", SPREAD, ids=[c.id for c in SPREAD])
@pytest.mark.parametrize("family", list(FACTORIES))
def test_backend_gradients_agree_with_the_oracle(family: str, base: Case, dtype: str) -> None:
    case = case_for(family, base, dtype=dtype)
    result = check_backward(backend(family), case)
    checks = checks_by_name(result)
    expected = ["grad x", *(["grad h0"] if case.initial_state else [])]
    assert all(name in checks for name in expected), list(checks)
    if case.packed:
        assert checks["grad x.padding"].passed and checks["grad x.padding"].max_abs == 0.0
    if family == "keras-jax" and dtype == "float64":
        # keras-jax-float64-tanh-in-float32 (conformance/declared/divergences.toml) reaches the gradients too:
        # float32-sized errors, far above float64's tolerance, far below any real bug's.
        assert result.verdict == Verdict.FAIL, result.reason
        for check in result.failing_checks:
            assert check.kind == "arithmetic" and check.tolerance is not None and check.max_abs is not None
            assert check.tolerance < check.max_abs < 1e-6, check.message
        return
    assert result.verdict == Verdict.PASS, result.reason
    assert result.worst_headroom is not None and 0 <= result.worst_headroom < 1


def test_backends_that_cannot_differentiate_or_hold_a_parameter_are_unsupported() -> None:
    pytest.importorskip("flax")
    nnx = check_backward(backend("flax-nnx"), Case(3, 4))
    assert nnx.verdict == Verdict.UNSUPPORTED and "b_hn" in nnx.reason  # the structural refusal, as in forward
    pytest.importorskip("onnxruntime")
    from backends.onnx.columns import spec_backends

    ort = next(b for b in spec_backends() if b.name == "onnx-spec/ort[cpu]")
    result = check_backward(ort, Case(3, 4))
    assert result.verdict == Verdict.UNSUPPORTED and "does not differentiate" in result.reason, result.reason
    assert "computes no gradients" in result.reason


# --- 2. planted gradient bugs, caught and named

PACKED_BI = Case(3, 4, bidirectional=True, batch=4, seq_len=7, lengths="unsorted", initial_state=True)
PACKED_DEEP = Case(3, 4, num_layers=2, batch_first=True, batch=4, seq_len=7, lengths="sorted", initial_state=True)


def failing(result: Result) -> dict[str, Check]:
    return {c.name: c for c in result.failing_checks}


def assert_worst_is_real(result: Result, actual: dict[str, np.ndarray], tensor: str, padding: bool = False) -> None:
    """The named worst element is the true argmax of |actual - expected|, recomputed here."""
    case = result.case
    name = f"grad {tensor}" + (".padding" if padding else "")
    check = checks_by_name(result)[name]
    diff = np.abs(np.asarray(actual[tensor], np.float64) - reference_gradients(case).tensors[tensor])
    if tensor == "x":
        valid = valid_mask(case, case_data(case)[1].lengths, diff.shape)
        diff = np.where(~valid if padding else valid, diff, -1.0)
    index = tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape))
    assert check.worst_index == gradient_index(case, tensor, index)
    assert check.max_abs == diff[index] and check.headroom is not None and check.headroom > 1


def planted_result(planted: AutogradGru, case: Case) -> tuple[Result, dict[str, np.ndarray]]:
    pytest.importorskip("torch")
    weights, inputs = case_data(case)
    return check_backward(planted, case), dict(planted.run_backward(case, weights, inputs, make_cotangents(case)))


@pytest.mark.parametrize("case", [PACKED_BI, PACKED_DEEP], ids=["packed-bi", "packed-deep"])
def test_the_unplanted_autograd_gru_passes(case: Case) -> None:
    result, _ = planted_result(AutogradGru(), case)
    assert result.verdict == Verdict.PASS, result.reason


@pytest.mark.parametrize("case", [PACKED_BI, PACKED_DEEP], ids=["packed-bi", "packed-deep"])
def test_a_detached_h0_fails_grad_h0_only(case: Case) -> None:
    result, actual = planted_result(DetachedH0(), case)
    assert result.verdict == Verdict.FAIL
    assert set(failing(result)) == {"grad h0"}
    assert_worst_is_real(result, actual, "h0")
    assert "grad h0: worst element at [layer=" in result.reason


@pytest.mark.parametrize("case", [PACKED_BI, PACKED_DEEP], ids=["packed-bi", "packed-deep"])
def test_a_folded_bias_adjoint_to_one_side_fails_bias_hh_at_gate_r_or_z(case: Case) -> None:
    result, actual = planted_result(FoldedBiasOneSide(), case)
    bad = failing(result)
    assert result.verdict == Verdict.FAIL and bad
    assert all(name.startswith("grad bias_hh_l") for name in bad), list(bad)
    assert len(bad) == case.num_layers * case.num_directions  # every cell's b_hr, b_hz
    for check in bad.values():
        assert check.worst_index is not None and check.worst_index["gate"] in ("r", "z")
        assert_worst_is_real(result, actual, check.name.removeprefix("grad "))


def test_a_reverse_direction_gradient_that_ignores_lengths_fails_grad_x_at_a_short_item() -> None:
    case = PACKED_BI
    result, actual = planted_result(ReverseGradientIgnoresLengths(), case)
    bad = failing(result)
    assert result.verdict == Verdict.FAIL
    assert {"grad x", "grad x.padding", "grad weight_ih_l0_reverse", "grad weight_hh_l0_reverse"} <= set(bad)
    # The forward direction's own parameters are untouched by the bug, and the check says so.
    assert not {"grad weight_ih_l0", "grad weight_hh_l0", "grad bias_ih_l0", "grad bias_hh_l0"} & set(bad)
    assert_worst_is_real(result, actual, "x")
    lengths = case_data(case)[1].lengths
    assert lengths is not None and lengths[bad["grad x"].worst_index["batch"]] < case.seq_len  # type: ignore[index]


@pytest.mark.parametrize("case", [PACKED_BI, PACKED_DEEP], ids=["packed-bi", "packed-deep"])
def test_gradients_through_padded_steps_fail_grad_x_padding(case: Case) -> None:
    result, actual = planted_result(GradientThroughPadding(), case)
    bad = failing(result)
    assert result.verdict == Verdict.FAIL and "grad x.padding" in bad
    padding = bad["grad x.padding"]
    assert padding.kind == "arithmetic" and padding.tolerance == 0.0 and padding.expected == 0.0
    assert_worst_is_real(result, actual, "x", padding=True)
    lengths = case_data(case)[1].lengths
    assert lengths is not None and padding.worst_index is not None
    assert padding.worst_index["step"] >= lengths[padding.worst_index["batch"]]  # a padded position


def test_missing_and_unexpected_gradients_are_named() -> None:
    class Forgetful(AutogradGru):
        family: str = "planted-grad-forgetful"

        def run_backward(self, *args: Any) -> dict[str, np.ndarray]:
            right = dict(super().run_backward(*args))
            del right["weight_hh_l0"]
            return {**right, "cell_l0.hr.kernel": np.zeros((4, 4), np.float32)}

    result, _ = planted_result(Forgetful(), PACKED_BI)
    bad = failing(result)
    assert set(bad) == {"grad weight_hh_l0", "grad cell_l0.hr.kernel"}
    assert all(c.kind == "shape" for c in bad.values())
    assert "missing" in bad["grad weight_hh_l0"].message and "unexpected" in bad["grad cell_l0.hr.kernel"].message


def test_worst_elements_name_gate_row_column_and_the_input_direction() -> None:
    case = Case(3, 4, num_layers=2, bidirectional=True, batch_first=True, batch=2, seq_len=5, initial_state=True)
    assert gradient_index(case, "weight_ih_l1_reverse", (9, 6)) == {
        "gate": "n",
        "row": 1,
        "input_direction": "backward",
        "column": 2,
    }
    assert gradient_index(case, "weight_ih_l0", (4, 2)) == {"gate": "z", "row": 0, "column": 2}
    assert gradient_index(case, "weight_hh_l0_reverse", (3, 1)) == {"gate": "r", "row": 3, "column": 1}
    assert gradient_index(case, "bias_hh_l1", (11,)) == {"gate": "n", "row": 3}
    assert gradient_index(case, "x", (1, 4, 2)) == {"batch": 1, "step": 4, "feature": 2}
    assert gradient_index(case, "h0", (3, 1, 2)) == {"layer": 1, "direction": "backward", "batch": 1, "unit": 2}


ONE_SIDED_FOLD = {"flax-linen": "backends.converters.flax_linen", "equinox": "backends.converters.equinox_gru"}


@pytest.mark.parametrize("family", list(ONE_SIDED_FOLD))
def test_a_real_converter_with_a_one_sided_fold_adjoint_fails_bias_hh(
    family: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The adapter path itself: the converter's fold adjoint sends the gradient to b_i only."""
    import importlib

    case = Case(3, 4, bidirectional=True, batch=3, seq_len=4, lengths="sorted")
    assert check_backward(backend(family), case).verdict == Verdict.PASS
    module = importlib.import_module(ONE_SIDED_FOLD[family])
    monkeypatch.setattr(module, "fold_adjoint", lambda g: (np.array(g), np.zeros_like(g)))
    result = check_backward(backend(family), case)
    bad = failing(result)
    assert result.verdict == Verdict.FAIL and set(bad) == {"grad bias_hh_l0", "grad bias_hh_l0_reverse"}
    assert all(c.worst_index is not None and c.worst_index["gate"] in ("r", "z") for c in bad.values())


# --- 3. compiles


def test_the_backward_compiles_once_per_signature() -> None:
    pytest.importorskip("flax")
    from backends.flax_linen import FlaxLinenGru
    from backends.jax_common import COMPILES, summarize

    linen = FlaxLinenGru()  # its own jit cache
    cases = [Case(3, 5, lengths=k, batch=4, seq_len=6, seed=s) for k in ("sorted", "unsorted", "full") for s in (7, 8)]
    mark = COMPILES.mark()
    for case in cases:
        weights, inputs = case_data(case)
        linen.run_backward(case, weights, inputs, make_cotangents(case))
    events = COMPILES.since(mark)
    counts = summarize(events)
    assert counts["program_compiles"] + counts["program_cache_hits"] == 1, counts
    ours = [e["fun_name"] for e in events if "gru_conformance" in e["fun_name"]]
    assert ours == ["jit(gru_conformance_flax_linen_backward)"]  # the vjp program only: the forward is inside it


def test_a_second_process_loads_the_stored_backward_and_compiles_nothing(tmp_path: Any) -> None:
    """The vjp program is stored (`jax.export`) and in the persistent cache: the same backward in a new
    process loads it, without tracing the library again, and compiling it is a cache hit."""
    pytest.importorskip("flax")
    script = (
        "import json; from backends.flax_linen import FlaxLinenGru; from backends.jax_common import COMPILES, summarize;"
        "from conformance.case import Case; from conformance.data import case_data, make_cotangents;"
        "c = Case(2, 3, bidirectional=True, lengths='sorted', batch=2, seq_len=3, initial_state=True);"
        "b, traced = FlaxLinenGru(), []; build = b.build_program;"
        "b.build_program = lambda case: traced.append(case) or build(case);"
        "w, i = case_data(c); b.run_backward(c, w, i, make_cotangents(c));"
        "print(json.dumps({**summarize(COMPILES.events), 'traced': len(traced)}))"
    )
    env = {**os.environ, "GRU_CONFORMANCE_CACHE": str(tmp_path)}
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, check=True
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        for _ in range(2)
    ]
    assert runs[0]["program_compiles"] == 1 and runs[0]["traced"] == 1
    assert runs[1]["program_compiles"] == 0 and runs[1]["setup_compiles"] == 0, runs[1]
    assert runs[1]["program_cache_hits"] == 1 and runs[1]["traced"] == 0, runs[1]
    assert any("backward" in p.name for p in (tmp_path / "jax").iterdir())


@pytest.mark.e2e
def test_a_run_builds_backward_programs_ahead_only_when_it_checks_gradients(
    suite, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plugin gives a JAX backend its backward checks' cases apart (`prepare_backward`): a forward-only
    run stores no vjp program, a backward run builds it ahead (its progress line) and no forward program."""
    pytest.importorskip("flax")
    monkeypatch.setenv("GRU_CONFORMANCE_CACHE", str(tmp_path / "cache"))
    case = Case(3, 4, bias=False, batch=2, seq_len=3).id

    def roles() -> list[str]:
        found = (tmp_path / "cache" / "jax" / "programs" / "flax-nnx").glob("*.json")
        return sorted(json.loads(p.read_text())["signature"]["role"] for p in found)

    backward = suite("--backends", "flax-nnx", "--case", case, "--quantity", "backward")
    assert backward.returncode == 0, backward.stdout[-3000:] + backward.stderr[-2000:]
    assert "compile backward (flax-nnx[cpu])" in backward.stdout
    assert roles() == ["backward"]
    forward = suite("--backends", "flax-nnx", "--case", case, "--quantity", "forward")
    assert forward.returncode == 0, forward.stdout[-3000:] + forward.stderr[-2000:]
    assert "compile backward" not in forward.stdout and roles() == ["backward", "forward"]
