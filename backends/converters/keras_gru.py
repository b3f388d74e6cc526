"""PyTorch `nn.GRU` weights <-> Keras 3 `layers.GRU(reset_after=True)` weights.

`keras.layers.GRUCell` (keras 3.15.1, layers/rnn/gru.py) holds `kernel` (in, 3H),
`recurrent_kernel` (H, 3H) and, with reset_after=True, `bias` (2, 3H): row 0 the input
bias, row 1 the recurrent bias. Gates are stacked (z, r, h) -- update first, unlike
PyTorch's (r, z, n) -- and the candidate is `tanh(x_h + r * (h @ U_h + b_rh))`, PyTorch's
linear_before_reset form. Every PyTorch parameter has exactly one place: no folding, and
the way back is exact. `bias=False` maps to `use_bias=False`.

Gradients come back through `keras_gradients_to_torch`, the adjoint of `torch_to_keras`.
The conversion is a permutation (gate reorder, transposes, stacking the two biases), so its
adjoint is its inverse: gradients go back exactly as weights do.


`reset_after=False` is the other published GRU (reset applied before the recurrent matmul,
`tanh(x_h + (r * h) @ U_h)`, x_h holding the one bias) with a bias of shape (3H,): one per
gate. PyTorch's weights map to it for that form (`torch_to_keras(..., reset_after=False)`),
by folding: b_r = b_ir + b_hr, b_z = b_iz + b_hz and b_h = b_in + b_hn are each one sum
outside the activation in that form, so the fold is exact in real arithmetic (rounded once,
see `backends.converters.fold`). What it can't hold is the split of each sum between
bias_ih and bias_hh (the way back puts the sums in bias_ih); what it computes is
`conformance.forms.Form(linear_before_reset=False)`, never PyTorch's GRU.

Weight list per Keras layer, in `layer.get_weights()` order: [kernel, recurrent_kernel,
bias] for a GRU, forward then backward for a Bidirectional.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from backends.converters import Unrepresentable, cell_tensors, fold, layout, put_cell, put_cell_gradients, torch_order

FOLDS: list[str] = []


def cannot_represent(bias: bool) -> list[str]:
    """Nothing: reset_after=True keeps separate input and recurrent biases."""
    return []


RESET_BEFORE_FOLDS = ["b_ir + b_hr -> bias[r]", "b_iz + b_hz -> bias[z]", "b_in + b_hn -> bias[h]"]


def cell_to_keras_reset_before(
    w_ih: np.ndarray, w_hh: np.ndarray, b_ih: np.ndarray | None, b_hh: np.ndarray | None
) -> list[np.ndarray]:
    """One PyTorch cell as [kernel, recurrent_kernel(, bias (3H,))] of a Keras GRU(reset_after=False)."""
    weights = cell_to_keras(w_ih, w_hh, None, None)  # the kernels are the same in both forms
    if b_ih is not None or b_hh is not None:
        zeros = np.zeros(w_ih.shape[0], dtype=w_ih.dtype)
        weights.append(_to_zrn(fold(zeros if b_ih is None else b_ih, zeros if b_hh is None else b_hh)))
    return weights


def _to_zrn(array: np.ndarray) -> np.ndarray:
    """(r, z, n) blocks along axis 0 -> (z, r, n)."""
    hidden = array.shape[0] // 3
    return np.concatenate([array[hidden : 2 * hidden], array[:hidden], array[2 * hidden :]])


_from_zrn = _to_zrn  # swapping the first two blocks is its own inverse


def cell_to_keras(
    w_ih: np.ndarray, w_hh: np.ndarray, b_ih: np.ndarray | None, b_hh: np.ndarray | None
) -> list[np.ndarray]:
    """One PyTorch cell as [kernel, recurrent_kernel(, bias)] of a Keras GRU."""
    weights = [np.ascontiguousarray(_to_zrn(w_ih).T), np.ascontiguousarray(_to_zrn(w_hh).T)]
    if b_ih is not None or b_hh is not None:
        zeros = np.zeros(w_ih.shape[0], dtype=w_ih.dtype)
        b_ih = zeros if b_ih is None else b_ih
        b_hh = zeros if b_hh is None else b_hh
        weights.append(np.stack([_to_zrn(b_ih), _to_zrn(b_hh)]))
    return weights


def cell_from_keras(
    weights: Sequence[np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """[kernel, recurrent_kernel(, bias)] of a Keras GRU as (w_ih, w_hh, b_ih, b_hh)."""
    kernel, recurrent = np.asarray(weights[0]), np.asarray(weights[1])
    w_ih, w_hh = _from_zrn(kernel.T), _from_zrn(recurrent.T)
    if len(weights) == 2:
        return w_ih, w_hh, None, None
    bias = np.asarray(weights[2])
    if bias.shape == (kernel.shape[1],):  # reset_after=False: one bias per gate, the sums go to bias_ih
        return w_ih, w_hh, _from_zrn(bias), np.zeros_like(bias)
    if bias.shape != (2, kernel.shape[1]):
        raise Unrepresentable(f"Keras GRU bias of shape {bias.shape}: only reset_after=True's (2, 3H) maps to PyTorch")
    return w_ih, w_hh, _from_zrn(bias[0]), _from_zrn(bias[1])


def torch_to_keras(tensors: Mapping[str, np.ndarray], reset_after: bool = True) -> list[list[np.ndarray]]:
    """A full nn.GRU state_dict as one `get_weights()`-ordered list per Keras layer (GRU(reset_after=...))."""
    layers, bidirectional, _ = layout(tensors)
    cell = cell_to_keras if reset_after else cell_to_keras_reset_before
    return [
        [w for d in range(2 if bidirectional else 1) for w in cell(*cell_tensors(tensors, layer, d))]
        for layer in range(layers)
    ]


def keras_to_torch(
    layers: Sequence[Sequence[np.ndarray]], bidirectional: bool, bias: bool = True
) -> dict[str, np.ndarray]:
    """Per-layer `get_weights()` lists back to a canonical state_dict."""
    out: dict[str, np.ndarray] = {}
    per_cell = 3 if bias else 2
    for layer, weights in enumerate(layers):
        directions = 2 if bidirectional else 1
        if len(weights) != per_cell * directions:
            raise Unrepresentable(
                f"Keras layer {layer}: {len(weights)} weights, expected {per_cell * directions} for bias={bias}"
            )
        for d in range(directions):
            cell = cell_from_keras(weights[d * per_cell : (d + 1) * per_cell])
            put_cell(out, layer, d, *cell, bias=bias, where="keras cell")
    return torch_order(out)


def keras_gradients_to_torch(
    grads: Sequence[Sequence[np.ndarray]], bidirectional: bool, bias: bool = True
) -> dict[str, np.ndarray]:
    """Gradients w.r.t. `torch_to_keras`'s per-layer weight lists as gradients w.r.t. the state_dict: its adjoint."""
    out: dict[str, np.ndarray] = {}
    per_cell = 3 if bias else 2
    directions = 2 if bidirectional else 1
    for layer, weights in enumerate(grads):
        if len(weights) != per_cell * directions:
            raise Unrepresentable(
                f"Keras layer {layer}: {len(weights)} gradients, expected {per_cell * directions} for bias={bias}"
            )
        for d in range(directions):
            cell = cell_from_keras(weights[d * per_cell : (d + 1) * per_cell])
            put_cell_gradients(out, layer, d, *cell, bias=bias)
    return torch_order(out)
