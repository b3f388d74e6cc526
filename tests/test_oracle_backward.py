"""The backward oracle is checked like the forward one, twice, and each check must catch a planted wrong backward.

1. Central finite differences of the forward oracle, in float64, for both reset forms:
   along a random direction of every tensor, and on single elements. With step EPS = 1e-5
   on O(1) values, the truncation error is ~ EPS^2 / 6 * |L'''| ~ 1e-11 and the cancellation
   error ~ u |L| / EPS ~ 1e-10 for |L| ~ 10, so FD_BOUND = 1e-7 (relative to the size of the
   derivative's terms) is two to three orders above a correct backward's error (measured
   worst: see the report) and far below any real bug's (~1).
2. torch float64 autograd (`nn.GRU().double()`, packed through `pack_padded_sequence`), torch's
   reset form only. Both compute the same sums in a different order, so they agree to
   float64 rounding times the recurrence's gain: TORCH_BOUND = 1e-12 relative to the
   gradient tensor's largest element (measured worst ~1e-14, over 260 steps).
3. The derived gradient tolerance (`conformance.tolerance_backward`): torch float32 autograd
   passes it with headroom < 1; a gradient with one bias block dropped fails it by far.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from conformance import oracle_backward
from conformance.case import Case
from conformance.compare import valid_mask
from conformance.data import Inputs, Weights, case_data, param_names
from conformance.oracle import gru_reference
from conformance.oracle_backward import Cotangents, Gradients, gru_backward, loss, make_cotangents
from conformance.tolerance_backward import backward_error_gain, derive_backward

EPS = 1e-5
FD_BOUND = 1e-7
TORCH_BOUND = 1e-12
ELEMENTS = 3  # single elements checked per tensor, besides the random direction

SORTED_BI = Case(2, 3, num_layers=2, bidirectional=True, batch=3, seq_len=6, lengths="sorted", dtype="float64")
UNSORTED_DEEP = Case(
    5,
    7,
    num_layers=3,
    bidirectional=True,
    batch_first=True,
    batch=4,
    seq_len=9,
    lengths="unsorted",
    initial_state=True,
    dtype="float64",
)
NOBIAS_DEEP = Case(
    4, 5, num_layers=3, bias=False, batch_first=True, batch=2, seq_len=7, initial_state=True, dtype="float64"
)
DENSE = Case(3, 4, dtype="float64")
ONE_STEP_FULL = Case(3, 6, bidirectional=True, batch=3, seq_len=1, lengths="full", dtype="float64")
UNSORTED_BF = Case(3, 6, num_layers=2, batch_first=True, batch=5, seq_len=8, lengths="unsorted", dtype="float64")
LONG = Case(
    2, 1, num_layers=2, bidirectional=True, batch=3, seq_len=260, lengths="sorted", initial_state=True, dtype="float64"
)

FD_CASES = [SORTED_BI, UNSORTED_DEEP, NOBIAS_DEEP, DENSE, ONE_STEP_FULL, UNSORTED_BF]
TORCH_CASES = [*FD_CASES, LONG]
H0_CASES = [UNSORTED_DEEP, NOBIAS_DEEP]
PACKED_BI_CASES = [SORTED_BI, UNSORTED_DEEP]

Backward = Callable[[Case, Weights, Inputs, Cotangents, bool], Gradients]


def expected_names(case: Case) -> list[str]:
    """What must be differentiated: x, h0 when the case gives one, every parameter."""
    return ["x", *(["h0"] if case.initial_state else []), *param_names(case)]


def perturbed(weights: Weights, inputs: Inputs, name: str, delta: np.ndarray) -> tuple[Weights, Inputs]:
    if name == "x":
        return weights, dataclasses.replace(inputs, x=inputs.x + delta)
    if name == "h0":
        assert inputs.h0 is not None
        return weights, dataclasses.replace(inputs, h0=inputs.h0 + delta)
    return Weights({**weights.tensors, name: weights.tensors[name] + delta}), inputs


def shape_of(weights: Weights, inputs: Inputs, name: str) -> tuple[int, ...]:
    if name in ("x", "h0"):
        array = getattr(inputs, name)
        assert array is not None
        return tuple(array.shape)
    return tuple(weights.tensors[name].shape)


def fd_errors(case: Case, linear_before_reset: bool, grads: Gradients) -> dict[str, float]:
    """Per tensor, the worst relative disagreement of `grads` with central differences of the forward oracle.

    Relative to the size of the derivative's terms (sum |g v|, or the tensor's largest
    gradient for a single element) or to the finite difference itself when larger, so a
    gradient that is missing altogether reads as an error of 1.
    """
    weights, inputs = case_data(case)
    cotangents = make_cotangents(case)
    rng = np.random.default_rng(7)

    def derivative(name: str, direction: np.ndarray) -> float:
        plus = gru_reference(case, *perturbed(weights, inputs, name, EPS * direction), linear_before_reset)
        minus = gru_reference(case, *perturbed(weights, inputs, name, -EPS * direction), linear_before_reset)
        return (loss(plus, cotangents) - loss(minus, cotangents)) / (2 * EPS)

    errors = {}
    for name in expected_names(case):
        shape = shape_of(weights, inputs, name)
        got = grads.tensors.get(name)
        if got is None or got.shape != shape:
            errors[name] = float("inf")
            continue
        direction = rng.uniform(-1.0, 1.0, shape)
        fd = derivative(name, direction)
        worst = abs(fd - float(np.sum(got * direction))) / max(float(np.sum(np.abs(got * direction))), abs(fd), 1e-300)
        flat_size = int(np.prod(shape))
        for flat in rng.choice(flat_size, size=min(ELEMENTS, flat_size), replace=False):
            unit = np.zeros(flat_size)
            unit[flat] = 1.0
            fd = derivative(name, unit.reshape(shape))
            element = float(got.reshape(-1)[flat])
            worst = max(worst, abs(fd - element) / max(float(np.abs(got).max()), abs(fd), 1e-300))
        errors[name] = worst
    return errors


def oracle(
    case: Case, weights: Weights, inputs: Inputs, cotangents: Cotangents, linear_before_reset: bool
) -> Gradients:
    return gru_backward(case, weights, inputs, cotangents, linear_before_reset)


# Planted wrong backwards: each must fail the comparison the oracle passes.


def dropped_h0(case: Case, weights: Weights, inputs: Inputs, cotangents: Cotangents, lbr: bool) -> Gradients:
    """Forgets that the state's adjoint flows into h0 after the first step."""
    right = gru_backward(case, weights, inputs, cotangents, lbr)
    return Gradients({**right.tensors, "h0": np.zeros_like(right.tensors["h0"])}, right.forward)


def reverse_ignores_lengths(monkeypatch: pytest.MonkeyPatch) -> Backward:
    """The reverse direction's adjoint pass runs every step, as if each item were seq_len long."""
    real = oracle_backward._backward_direction

    def wrong(tape: Any, d_out: Any, d_h: Any, valid: np.ndarray, cell: Any, reverse: bool, *rest: Any) -> Any:
        return real(tape, d_out, d_h, np.ones_like(valid) if reverse else valid, cell, reverse, *rest)

    monkeypatch.setattr(oracle_backward, "_backward_direction", wrong)
    return oracle


def other_reset_form(case: Case, weights: Weights, inputs: Inputs, cotangents: Cotangents, lbr: bool) -> Gradients:
    """Differentiates the other GRU form than the forward computed."""
    return gru_backward(case, weights, inputs, cotangents, not lbr)


def dropped_bias_hh_r(grads: dict[str, np.ndarray], hidden: int) -> dict[str, np.ndarray]:
    """bias_hh's reset block gets no gradient (as if only b_ir received it); W_hh's when there is no bias."""
    wrong = dict(grads)
    kind = "bias_hh" if any(n.startswith("bias") for n in wrong) else "weight_hh"
    name = next(n for n in wrong if n.startswith(kind))
    wrong[name] = wrong[name].copy()
    wrong[name][:hidden] = 0.0
    return wrong


def ids(cases: list[Case]) -> list[str]:
    return [c.id for c in cases]


# --- the oracle's own contract


@pytest.mark.parametrize("lbr", [True, False], ids=["torch-form", "other-form"])
@pytest.mark.parametrize("case", TORCH_CASES, ids=ids(TORCH_CASES))
def test_its_forward_is_the_forward_oracle_bit_for_bit(case: Case, lbr: bool) -> None:
    weights, inputs = case_data(case)
    grads = gru_backward(case, weights, inputs, make_cotangents(case), lbr)
    expected = gru_reference(case, weights, inputs, lbr)
    assert np.array_equal(grads.forward.output, expected.output) and np.array_equal(grads.forward.h_n, expected.h_n)
    assert list(grads.tensors) == expected_names(case)
    assert all(grads.tensors[n].shape == shape_of(weights, inputs, n) for n in grads.tensors)


@pytest.mark.parametrize("case", [UNSORTED_DEEP, UNSORTED_BF, dataclasses.replace(SORTED_BI, dtype="float16")], ids=str)
def test_cotangents_are_deterministic_read_only_in_the_dtype_and_zero_at_padding(case: Case) -> None:
    make_cotangents.cache_clear()
    first = make_cotangents(case)
    make_cotangents.cache_clear()
    again = make_cotangents(case)
    assert np.array_equal(first.output, again.output) and np.array_equal(first.h_n, again.h_n)
    assert first.output.dtype == case_data(case)[1].x.dtype == first.h_n.dtype
    assert not first.output.flags.writeable and not first.h_n.flags.writeable
    valid = valid_mask(case, case_data(case)[1].lengths, first.output.shape)
    assert np.all(first.output[~valid] == 0) and np.all(first.output[valid] != 0)


@pytest.mark.parametrize(
    "case", [UNSORTED_DEEP, SORTED_BI, UNSORTED_BF], ids=ids([UNSORTED_DEEP, SORTED_BI, UNSORTED_BF])
)
def test_dx_is_exactly_zero_at_padded_positions(case: Case) -> None:
    weights, inputs = case_data(case)
    grads = gru_backward(case, weights, inputs, make_cotangents(case))
    valid = valid_mask(case, inputs.lengths, grads.x.shape)
    assert np.all(grads.x[~valid] == 0.0) and np.all(grads.x[valid] != 0.0)


# --- 1. finite differences


@pytest.mark.parametrize("lbr", [True, False], ids=["torch-form", "other-form"])
@pytest.mark.parametrize("case", FD_CASES, ids=ids(FD_CASES))
def test_gradients_match_finite_differences(case: Case, lbr: bool) -> None:
    weights, inputs = case_data(case)
    errors = fd_errors(case, lbr, gru_backward(case, weights, inputs, make_cotangents(case), lbr))
    worst = max(errors, key=errors.__getitem__)
    assert errors[worst] <= FD_BOUND, f"{case.id} {worst}: FD relative error {errors[worst]:.2e} > {FD_BOUND:g}"


@pytest.mark.parametrize("case", H0_CASES, ids=ids(H0_CASES))
def test_finite_differences_catch_a_dropped_h0_gradient(case: Case) -> None:
    weights, inputs = case_data(case)
    errors = fd_errors(case, True, dropped_h0(case, weights, inputs, make_cotangents(case), True))
    assert errors["h0"] > 1e3 * FD_BOUND


@pytest.mark.parametrize("case", PACKED_BI_CASES, ids=ids(PACKED_BI_CASES))
def test_finite_differences_catch_a_reverse_direction_that_ignores_lengths(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights, inputs = case_data(case)
    wrong = reverse_ignores_lengths(monkeypatch)(case, weights, inputs, make_cotangents(case), True)
    assert max(fd_errors(case, True, wrong).values()) > 1e3 * FD_BOUND


@pytest.mark.parametrize("lbr", [True, False], ids=["torch-form", "other-form"])
def test_finite_differences_catch_the_other_reset_form(lbr: bool) -> None:
    case = UNSORTED_BF
    weights, inputs = case_data(case)
    wrong = other_reset_form(case, weights, inputs, make_cotangents(case), lbr)
    assert max(fd_errors(case, lbr, wrong).values()) > 1e3 * FD_BOUND


# --- 2. torch float64 autograd


def torch_gradients(
    case: Case, weights: Weights, inputs: Inputs, cotangents: Cotangents, dtype: str
) -> dict[str, np.ndarray]:
    """dL/d(x, h0, parameters) from `nn.GRU` autograd in `dtype`, driven as backends/torch_eager.py drives it."""
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    def tensor(array: np.ndarray) -> Any:
        return torch.tensor(np.asarray(array, np.float64)).to(getattr(torch, dtype))

    module = torch.nn.GRU(
        case.input_size,
        case.hidden_size,
        case.num_layers,
        bias=case.bias,
        batch_first=case.batch_first,
        bidirectional=case.bidirectional,
        dtype=getattr(torch, dtype),
    )
    module.load_state_dict({k: tensor(v) for k, v in weights.tensors.items()})
    x = tensor(inputs.x).requires_grad_()
    h0 = None if inputs.h0 is None else tensor(inputs.h0).requires_grad_()
    if inputs.lengths is None:
        output, h_n = module(x, h0)
    else:
        packed = pack_padded_sequence(
            x, torch.tensor(np.array(inputs.lengths)), batch_first=case.batch_first, enforce_sorted=case.enforce_sorted
        )
        packed_out, h_n = module(packed, h0)
        output, _ = pad_packed_sequence(packed_out, batch_first=case.batch_first, total_length=case.seq_len)
    ((output * tensor(cotangents.output)).sum() + (h_n * tensor(cotangents.h_n)).sum()).backward()
    grads = {"x": x.grad}
    if h0 is not None:
        grads["h0"] = h0.grad
    grads.update((name, p.grad) for name, p in module.named_parameters())
    return {name: g.detach().to(torch.float64).numpy() for name, g in grads.items()}


def relative_errors(expected: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> dict[str, float]:
    """Per tensor, the largest absolute difference over the expected tensor's largest element."""
    errors = {}
    for name, want in expected.items():
        have = got.get(name)
        if have is None or have.shape != want.shape:
            errors[name] = float("inf")
            continue
        errors[name] = float(np.abs(have - want).max() / max(float(np.abs(want).max()), 1e-300))
    return errors


@pytest.mark.parametrize("case", TORCH_CASES, ids=ids(TORCH_CASES))
def test_gradients_match_torch_float64_autograd(case: Case) -> None:
    weights, inputs = case_data(case)
    cotangents = make_cotangents(case)
    expected = torch_gradients(case, weights, inputs, cotangents, "float64")
    errors = relative_errors(expected, dict(gru_backward(case, weights, inputs, cotangents).tensors))
    assert set(errors) == set(expected_names(case))
    worst = max(errors, key=errors.__getitem__)
    assert errors[worst] <= TORCH_BOUND, f"{case.id} {worst}: relative error {errors[worst]:.2e} > {TORCH_BOUND:g}"


@pytest.mark.parametrize(
    ("case", "planted"),
    [
        *((c, "dropped_h0") for c in H0_CASES),
        *((c, "reverse_ignores_lengths") for c in PACKED_BI_CASES),
        (UNSORTED_BF, "other_reset_form"),
    ],
    ids=str,
)
def test_the_torch_comparison_catches_planted_backwards(
    case: Case, planted: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights, inputs = case_data(case)
    cotangents = make_cotangents(case)
    expected = torch_gradients(case, weights, inputs, cotangents, "float64")
    backward: Backward = {"dropped_h0": dropped_h0, "other_reset_form": other_reset_form}.get(
        planted, reverse_ignores_lengths(monkeypatch)
    )
    wrong = backward(case, weights, inputs, cotangents, True)
    assert max(relative_errors(expected, dict(wrong.tensors)).values()) > 1e6 * TORCH_BOUND


# --- 3. the derived gradient tolerance

FLOAT32_CASES = [dataclasses.replace(c, dtype="float32") for c in TORCH_CASES]


def headrooms(case: Case, got: dict[str, np.ndarray]) -> dict[str, float]:
    expected = oracle_backward.reference_gradients(case).tensors
    atol = derive_backward(case).atol
    return {name: float(np.abs(got[name] - expected[name]).max()) / atol[name] for name in expected}


@pytest.mark.parametrize("case", FLOAT32_CASES, ids=ids(FLOAT32_CASES))
def test_torch_float32_gradients_pass_the_derived_tolerance_and_a_dropped_bias_block_fails(case: Case) -> None:
    weights, inputs = case_data(case)
    got = torch_gradients(case, weights, inputs, make_cotangents(case), "float32")
    passing = headrooms(case, got)
    assert max(passing.values()) < 1.0, {k: f"{v:.3g}" for k, v in passing.items() if v >= 1}
    failing = headrooms(case, dropped_bias_hh_r(got, case.hidden_size))
    assert max(failing.values()) > 100


def test_the_gain_is_deterministic_and_the_tolerance_is_its_formula() -> None:
    case = dataclasses.replace(LONG, dtype="bfloat16")
    backward_error_gain.cache_clear()
    first = backward_error_gain(case)
    backward_error_gain.cache_clear()
    assert backward_error_gain(case) == first
    assert set(first.state) == set(expected_names(case))
    assert first.accumulation["x"] == first.accumulation["h0"] == 0
    assert all(first.accumulation[n] > 0 for n in param_names(case))
    tol = derive_backward(case)
    for name, atol in tol.atol.items():
        terms = tol.sigma_forward * first.state[name] + tol.sigma_adjoint * first.adjoint[name]
        assert atol == 2.0 * (terms + tol.sum_roundoff * first.accumulation[name])
    assert tol.adjoint_dot_length == 3 * case.hidden_size + 1 and tol.sum_terms == case.seq_len * case.batch


def test_default_precision_allows_tf32_for_float32_gradients_only() -> None:
    case = dataclasses.replace(SORTED_BI, dtype="float32")
    strict, default = derive_backward(case), derive_backward(case, "default")
    assert strict.accumulate_format == "float32" and default.accumulate_format == "tf32"
    assert all(default.atol[n] > 100 * strict.atol[n] for n in strict.atol)
    assert derive_backward(SORTED_BI, "default") == derive_backward(SORTED_BI)
