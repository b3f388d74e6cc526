"""PyTorch `nn.GRU` weights <-> `equinox.nn.GRUCell` modules.

`eqx.nn.GRUCell` (equinox 0.13.8, nn/_rnn.py) holds `weight_ih` (3H, in), `weight_hh`
(3H, H), `bias` (3H,) and `bias_n` (H,), gates (r, z, n) in PyTorch's order, and computes

    igates = weight_ih @ x + bias;  hgates = weight_hh @ h
    r = sigmoid(ig_r + hg_r);  z = sigmoid(ig_z + hg_z);  n = tanh(ig_n + r * (hg_n + bias_n))

Fold rules: bias = b_ih + (b_hr, b_hz, 0); bias_n = b_hn. Weights are PyTorch's as they
are. Everything fits; the way back puts `bias` in bias_ih and (0, 0, bias_n) in bias_hh.
`bias=False` maps to `use_bias=False` (no bias arrays at all), exactly PyTorch's bias=False.

Gradients come back through `equinox_gradients_to_torch`, the adjoint of `torch_to_equinox`:
`bias`'s r and z gradients go to both b_i and b_h of their gate, `bias_n`'s to b_hn.

Stack layout: a list over layers of a list over directions of cells (forward, reverse).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from backends.converters import (
    bias_gates,
    cell_tensors,
    fold,
    fold_adjoint,
    gates,
    layout,
    put_cell,
    put_cell_gradients,
    torch_order,
)

FOLDS = ["b_hr -> bias[r] (+ b_ir)", "b_hz -> bias[z] (+ b_iz)", "b_hn -> bias_n"]


def cannot_represent(bias: bool) -> list[str]:
    """Nothing: eqx.nn.GRUCell keeps b_hn as `bias_n`."""
    return []


def cell_to_equinox(w_ih: np.ndarray, w_hh: np.ndarray, b_ih: np.ndarray | None, b_hh: np.ndarray | None) -> Any:
    """One PyTorch cell as an `eqx.nn.GRUCell` holding numpy arrays (no random init is computed)."""
    import equinox as eqx

    hidden, width = w_hh.shape[1], w_ih.shape[1]
    use_bias = b_ih is not None or b_hh is not None
    dtype = w_ih.dtype
    template = _template(width, hidden, use_bias, dtype)
    values: list[np.ndarray] = [np.array(w_ih), np.array(w_hh)]
    if use_bias:
        (bi_r, bi_z, bi_n), (bh_r, bh_z, bh_n) = bias_gates(b_ih, b_hh, hidden, dtype)
        values += [np.concatenate([fold(bi_r, bh_r), fold(bi_z, bh_z), bi_n]), np.array(bh_n)]
        return eqx.tree_at(lambda c: (c.weight_ih, c.weight_hh, c.bias, c.bias_n), template, tuple(values))
    return eqx.tree_at(lambda c: (c.weight_ih, c.weight_hh), template, tuple(values))


@lru_cache(maxsize=256)
def _template(width: int, hidden: int, use_bias: bool, dtype: np.dtype) -> Any:
    """The cell's structure without computing its random init (only shapes are traced); cached
    because tracing costs ~1 ms per cell on every conversion otherwise."""
    import equinox as eqx
    import jax

    return eqx.filter_eval_shape(
        lambda: eqx.nn.GRUCell(width, hidden, use_bias=use_bias, dtype=dtype, key=jax.random.key(0))
    )


def cell_from_equinox(cell: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """An `eqx.nn.GRUCell` as (w_ih, w_hh, b_ih, b_hh); biases None when use_bias=False."""
    w_ih, w_hh = np.asarray(cell.weight_ih), np.asarray(cell.weight_hh)
    if not cell.use_bias:
        return w_ih, w_hh, None, None
    bias_n = np.asarray(cell.bias_n)
    zeros = np.zeros_like(bias_n)
    return w_ih, w_hh, np.asarray(cell.bias), np.concatenate([zeros, zeros, bias_n])


def torch_to_equinox(tensors: Mapping[str, np.ndarray]) -> list[list[Any]]:
    """A full nn.GRU state_dict as cells[layer][direction]."""
    layers, bidirectional, _ = layout(tensors)
    return [
        [cell_to_equinox(*cell_tensors(tensors, layer, d)) for d in range(2 if bidirectional else 1)]
        for layer in range(layers)
    ]


def equinox_to_torch(cells: Sequence[Sequence[Any]], bias: bool | None = None) -> dict[str, np.ndarray]:
    """cells[layer][direction] back to a canonical state_dict; `bias` defaults to the cells' use_bias."""
    out: dict[str, np.ndarray] = {}
    for layer, directions in enumerate(cells):
        for direction, cell in enumerate(directions):
            want = cell.use_bias if bias is None else bias
            put_cell(out, layer, direction, *cell_from_equinox(cell), bias=want, where="equinox cell")
    return torch_order(out)


def cell_gradients_from_equinox(
    grads: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The adjoint of `cell_to_equinox`: a GRUCell-shaped gradient as (dW_ih, dW_hh, db_ih, db_hh)."""
    g_w_ih, g_w_hh = np.asarray(grads.weight_ih), np.asarray(grads.weight_hh)
    if grads.bias is None:
        return g_w_ih, g_w_hh, None, None
    g_r, g_z, g_n = gates(np.asarray(grads.bias))
    (g_b_ir, g_b_hr), (g_b_iz, g_b_hz) = fold_adjoint(g_r), fold_adjoint(g_z)
    return (
        g_w_ih,
        g_w_hh,
        np.concatenate([g_b_ir, g_b_iz, g_n]),
        np.concatenate([g_b_hr, g_b_hz, np.asarray(grads.bias_n)]),
    )


def equinox_gradients_to_torch(grads: Sequence[Sequence[Any]], bias: bool = True) -> dict[str, np.ndarray]:
    """Gradients w.r.t. `torch_to_equinox`'s cells[layer][direction] as gradients w.r.t. the state_dict: its adjoint.

    `grads` has the cells' structure (what `jax.vjp` returns for them: GRUCells holding gradients).
    """
    out: dict[str, np.ndarray] = {}
    for layer, directions in enumerate(grads):
        for direction, cell in enumerate(directions):
            put_cell_gradients(out, layer, direction, *cell_gradients_from_equinox(cell), bias=bias)
    return torch_order(out)
