"""PyTorch `nn.GRU` weights <-> dm-haiku `hk.GRU` parameters, for the reset-before-matmul form.

`hk.GRU` (haiku 0.0.17, haiku/_src/recurrent.py) is haiku's only GRU, and it is the other
published form, with its own conventions:

    z = sigmoid(x @ w_i[:, z] + h @ w_h[:, z] + b[z])
    r = sigmoid(x @ w_i[:, r] + h @ w_h[:, r] + b[r])
    a = tanh(x @ w_i[:, a] + (r * h) @ w_h[:, a] + b[a])
    h' = (1 - z) * h + z * a

Parameters per core: `w_i` (in, 3H), `w_h` (H, 3H), `b` (3H,), gate blocks (z, r, a); one bias
per gate. Against PyTorch's weights in the form `Form(linear_before_reset=False)` (the oracle's
other form: n = tanh(W_in x + b_in + W_hn (r*h) + b_hn), h' = (1 - z) * n + z * h):

* the update gate's convention is the opposite one: haiku's z is 1 - z_torch = sigmoid(-pre_z),
  so the update gate's weights and its bias are negated (exact);
* each gate has one bias: b_r = b_ir + b_hr, b_z = -(b_iz + b_hz), b_a = b_in + b_hn, each one sum
  outside the activation in this form, so the fold is exact in real arithmetic (formed in float64,
  rounded once: `backends.converters.fold`).

So every canonical parameter maps, for this form. What haiku can't represent: the split of each
gate's bias between bias_ih and bias_hh (only the sums; the way back puts them in bias_ih with
zeros in bias_hh), and PyTorch's own form at all (b_hn inside r * (...) has no place in hk.GRU).
`bias=False` maps to zero biases (hk.GRU always has `b`); the way back with bias=False refuses
nonzero ones.

Tree: {"gru_l{k}[_reverse]": {"w_i", "w_h", "b"}}, the module names the adapter gives its cores.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from backends.converters import bias_gates, cell_tensors, fold, gates, layout, put_cell, suffix, torch_order

FOLDS = ["b_ir + b_hr -> b[r]", "-(b_iz + b_hz) -> b[z] (update gate negated)", "b_in + b_hn -> b[a]"]


def cannot_represent(bias: bool) -> list[str]:
    """Nothing that changes the reset-before form's numbers: only sums of biases are kept (see FOLDS)."""
    return []


def module_name(layer: int, direction: int) -> str:
    return "gru" + suffix(layer, direction)


def cell_to_haiku(
    w_ih: np.ndarray, w_hh: np.ndarray, b_ih: np.ndarray | None, b_hh: np.ndarray | None
) -> dict[str, np.ndarray]:
    hidden = w_hh.shape[1]
    (w_ir, w_iz, w_in), (w_hr, w_hz, w_hn) = gates(w_ih), gates(w_hh)
    (b_ir, b_iz, b_in), (b_hr, b_hz, b_hn) = bias_gates(b_ih, b_hh, hidden, w_ih.dtype)
    return {
        "w_i": np.ascontiguousarray(np.concatenate([-w_iz, w_ir, w_in]).T),
        "w_h": np.ascontiguousarray(np.concatenate([-w_hz, w_hr, w_hn]).T),
        "b": np.concatenate([-fold(b_iz, b_hz), fold(b_ir, b_hr), fold(b_in, b_hn)]),
    }


def cell_from_haiku(params: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """hk.GRU's {w_i, w_h, b} as (w_ih, w_hh, b_ih, b_hh): the bias sums in b_ih, zeros in b_hh."""
    w_i, w_h, b = (np.asarray(params[k]) for k in ("w_i", "w_h", "b"))
    (w_iz, w_ir, w_in), (w_hz, w_hr, w_hn), (b_z, b_r, b_a) = gates(w_i.T), gates(w_h.T), gates(b)
    b_ih = np.concatenate([b_r, -b_z, b_a])
    return np.concatenate([w_ir, -w_iz, w_in]), np.concatenate([w_hr, -w_hz, w_hn]), b_ih, np.zeros_like(b_ih)


def torch_to_haiku(tensors: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """A full nn.GRU state_dict as haiku's params tree (one hk.GRU per layer and direction)."""
    layers, bidirectional, _ = layout(tensors)
    return {
        module_name(layer, d): cell_to_haiku(*cell_tensors(tensors, layer, d))
        for layer in range(layers)
        for d in range(2 if bidirectional else 1)
    }


def haiku_to_torch(params: Mapping[str, Mapping[str, Any]], bias: bool = True) -> dict[str, np.ndarray]:
    """haiku's params tree back to a canonical state_dict (folded sums in bias_ih)."""
    out: dict[str, np.ndarray] = {}
    for name, cell in params.items():
        layer_part = name.removeprefix("gru_l")
        layer, direction = int(layer_part.split("_")[0]), int(layer_part.endswith("_reverse"))
        put_cell(out, layer, direction, *cell_from_haiku(cell), bias=bias, where="haiku gru")
    return torch_order(out)
