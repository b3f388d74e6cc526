"""The oracle is the one truth, so it is checked twice: by hand and against torch in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conformance.case import Case
from conformance.data import Inputs, Weights, case_data
from conformance.oracle import gru_reference
from conformance.tolerance import derive


def tiny_case() -> tuple[Case, Weights, Inputs]:
    case = Case(input_size=1, hidden_size=1, batch=1, seq_len=1, initial_state=True, dtype="float64")
    weights = Weights(
        {
            "weight_ih_l0": np.array([[0.5], [-0.25], [1.0]]),
            "weight_hh_l0": np.array([[0.25], [0.5], [-0.5]]),
            "bias_ih_l0": np.array([0.1, 0.2, 0.3]),
            "bias_hh_l0": np.array([-0.1, 0.1, 0.2]),
        }
    )
    return case, weights, Inputs(x=np.array([[[1.0]]]), h0=np.array([[[0.5]]]), lengths=None)


def test_hand_computed_single_step() -> None:
    case, weights, inputs = tiny_case()
    # r = s(0.5 + 0.1 + 0.25*0.5 - 0.1), z = s(-0.25 + 0.2 + 0.5*0.5 + 0.1), n = tanh(1 + 0.3 + r*(-0.5*0.5 + 0.2))
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    r, z = sig(0.625), sig(0.3)
    n = math.tanh(1.3 + r * (-0.05))
    expected = (1 - z) * n + z * 0.5
    # on paper: r=0.651355, z=0.574443, n=tanh(1.267432)=0.853100, h=0.425557*0.853100+0.287221
    assert expected == pytest.approx(0.650264, abs=1e-6)
    got = gru_reference(case, weights, inputs)
    assert got.output.shape == (1, 1, 1) and got.h_n.shape == (1, 1, 1)
    assert got.output[0, 0, 0] == pytest.approx(expected, abs=1e-15)
    assert got.h_n[0, 0, 0] == pytest.approx(expected, abs=1e-15)


def test_linear_before_reset_false_is_the_other_form() -> None:
    case, weights, inputs = tiny_case()
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    r, z = sig(0.625), sig(0.3)
    n = math.tanh(1.3 + (-0.5) * (r * 0.5) + 0.2)  # W_hn (r*h) + b_hn
    expected = (1 - z) * n + z * 0.5
    got = gru_reference(case, weights, inputs, linear_before_reset=False)
    assert got.h_n[0, 0, 0] == pytest.approx(expected, abs=1e-15)
    assert got.h_n[0, 0, 0] != pytest.approx(gru_reference(case, weights, inputs).h_n[0, 0, 0], abs=1e-6)


def torch_gru(case: Case, weights: Weights, inputs: Inputs) -> tuple[np.ndarray, np.ndarray]:
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    module = torch.nn.GRU(
        case.input_size,
        case.hidden_size,
        case.num_layers,
        bias=case.bias,
        batch_first=case.batch_first,
        bidirectional=case.bidirectional,
    ).double()
    module.load_state_dict({k: torch.tensor(np.asarray(v, np.float64)) for k, v in weights.tensors.items()})
    x = torch.tensor(np.asarray(inputs.x, np.float64))
    h0 = None if inputs.h0 is None else torch.tensor(np.asarray(inputs.h0, np.float64))
    with torch.no_grad():
        if inputs.lengths is None:
            out, h_n = module(x, h0)
        else:
            packed = pack_padded_sequence(
                x,
                torch.tensor(np.array(inputs.lengths)),
                batch_first=case.batch_first,
                enforce_sorted=case.enforce_sorted,
            )
            out, h_n = module(packed, h0)
            out, _ = pad_packed_sequence(out, batch_first=case.batch_first, total_length=case.seq_len)
    return out.numpy(), h_n.numpy()


SPREAD = [
    Case(3, 4, dtype="float64"),
    Case(
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
    ),
    Case(2, 3, num_layers=2, bidirectional=True, batch=3, seq_len=6, lengths="sorted", dtype="float64"),
    Case(4, 5, num_layers=3, bias=False, batch_first=True, batch=2, seq_len=7, initial_state=True, dtype="float64"),
    Case(
        2,
        1,
        num_layers=2,
        bidirectional=True,
        batch=3,
        seq_len=260,
        lengths="sorted",
        initial_state=True,
        dtype="float64",
    ),
    Case(3, 6, bidirectional=True, batch=3, seq_len=1, lengths="full", dtype="float64"),
    Case(3, 6, num_layers=2, batch_first=True, batch=5, seq_len=8, lengths="unsorted", dtype="float64"),
]


@pytest.mark.parametrize("case", SPREAD, ids=[c.id for c in SPREAD])
def test_oracle_matches_torch_float64(case: Case) -> None:
    weights, inputs = case_data(case)
    expected = gru_reference(case, weights, inputs)
    out, h_n = torch_gru(case, weights, inputs)
    assert out.shape == expected.output.shape and h_n.shape == expected.h_n.shape
    # Held to the derived float64 tolerance, the same bound every backend is judged by (about 1e-14),
    # not a looser fixed one: the truth can't be held to less than what it judges.
    atol = derive(case).atol
    assert np.abs(out - expected.output).max() <= atol
    assert np.abs(h_n - expected.h_n).max() <= atol


def test_oracle_padding_is_zero_and_reverse_starts_at_last_valid_step() -> None:
    case = Case(2, 3, bidirectional=True, batch=3, seq_len=6, lengths="unsorted", dtype="float64")
    weights, inputs = case_data(case)
    got = gru_reference(case, weights, inputs)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    w_ih, _w_hh, b_ih, b_hh = weights.cell(0, 1)
    for item, length in enumerate(inputs.lengths):
        assert np.all(got.output[length:, item] == 0)
        # The backward direction's first step reads the item's LAST VALID input from a zero state,
        # computed here by hand, independently of the oracle's loop.
        gi, gh = w_ih @ inputs.x[length - 1, item] + b_ih, b_hh  # h = 0, so W_hh h = 0
        r, z = sig(gi[:3] + gh[:3]), sig(gi[3:6] + gh[3:6])
        first_backward = (1 - z) * np.tanh(gi[6:] + r * gh[6:])
        assert got.output[length - 1, item, 3:] == pytest.approx(first_backward, abs=1e-15)
