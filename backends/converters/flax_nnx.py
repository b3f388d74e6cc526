"""PyTorch `nn.GRU` weights <-> `flax.nnx.GRUCell` params, plus the stack module they fit.

`flax.nnx.GRUCell` (flax 0.12.8, nnx/nn/recurrent.py) holds two Linear layers: `dense_i`
(kernel (in, 3H), bias (3H,)) and `dense_h` (kernel (H, 3H), `use_bias=False`), gates
(r, z, n) along the last axis. Its code computes

    r = sigmoid(xi_r + hh_r);  z = sigmoid(xi_z + hh_z);  n = tanh(xi_n + r * hh_n)

so there is no recurrent bias at all. b_hr and b_hz fold into dense_i.bias exactly, but
b_hn sits inside `r * (W_hn h + b_hn)` and has no place: a nonzero b_hn raises
`Unrepresentable`. (The class docstring's formula shows `r * (W_hn h + b_hn)`; the code
has no b_hn.) The way back puts dense_i.bias in bias_ih and zeros in bias_hh.

Gradients come back through `nnx_gradients_to_torch`, the adjoint of `torch_to_nnx`
(kernels transposed back), for bias=False GRUs only: with biases, dL/d b_hn is a gradient
nnx can't compute (it has no b_hn), so the adjoint refuses rather than report a zero.

Pure-dict state (`nnx.State.to_pure_dict()` of `gru_stack`'s params):
`{"layers": {k: {"cell": ...}}}`, or `{"layers": {k: {"forward_rnn": {"cell": ...},
"backward_rnn": {"cell": ...}}}}` when bidirectional; cell = `{"dense_i": {"kernel",
"bias"}, "dense_h": {"kernel"}}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from backends.converters import (
    Unrepresentable,
    bias_gates,
    cell_tensors,
    fold,
    layout,
    put_cell,
    put_cell_gradients,
    suffix,
    torch_order,
)

FOLDS = ["b_hr -> dense_i.bias[r] (+ b_ir)", "b_hz -> dense_i.bias[z] (+ b_iz)"]


def cannot_represent(bias: bool) -> list[str]:
    """b_hn, whenever the GRU has biases: nnx.GRUCell's dense_h has use_bias=False."""
    if not bias:
        return []
    return [
        "b_hn (bias_hh n-gate block): nnx.GRUCell computes tanh(xi_n + r * (h @ W_hn)) with no recurrent "
        "bias, and b_hn inside r*(...) can't fold into any other bias"
    ]


def cell_to_nnx(
    w_ih: np.ndarray, w_hh: np.ndarray, b_ih: np.ndarray | None, b_hh: np.ndarray | None, where: str = "cell"
) -> dict[str, dict[str, np.ndarray]]:
    """One PyTorch cell as an nnx GRUCell's pure-dict params; raises if b_hn is nonzero."""
    hidden = w_hh.shape[1]
    (bi_r, bi_z, bi_n), (bh_r, bh_z, bh_n) = bias_gates(b_ih, b_hh, hidden, w_hh.dtype)
    if np.any(np.asarray(bh_n, dtype=np.float64) != 0):
        raise Unrepresentable(f"{where}: {cannot_represent(True)[0]}")
    return {
        "dense_i": {
            "kernel": np.ascontiguousarray(w_ih.T),
            "bias": np.concatenate([fold(bi_r, bh_r), fold(bi_z, bh_z), bi_n]),
        },
        "dense_h": {"kernel": np.ascontiguousarray(w_hh.T)},
    }


def cell_from_nnx(params: Mapping[str, Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """An nnx GRUCell's pure-dict params as (w_ih, w_hh, b_ih, b_hh) with bias_hh all zero."""
    w_ih = np.ascontiguousarray(np.asarray(params["dense_i"]["kernel"]).T)
    w_hh = np.ascontiguousarray(np.asarray(params["dense_h"]["kernel"]).T)
    b_ih = np.asarray(params["dense_i"]["bias"])
    return w_ih, w_hh, b_ih, np.zeros_like(b_ih)


def torch_to_nnx(tensors: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """A full nn.GRU state_dict as `gru_stack`'s pure-dict params; raises `Unrepresentable` for b_hn."""
    layers, bidirectional, _ = layout(tensors)
    out: dict[int, Any] = {}
    for layer in range(layers):
        cells = [
            cell_to_nnx(*cell_tensors(tensors, layer, d), where="nnx cell" + suffix(layer, d))
            for d in range(2 if bidirectional else 1)
        ]
        out[layer] = (
            {"forward_rnn": {"cell": cells[0]}, "backward_rnn": {"cell": cells[1]}}
            if bidirectional
            else {"cell": cells[0]}
        )
    return {"layers": out}


def nnx_to_torch(state: Mapping[str, Any], bias: bool = True) -> dict[str, np.ndarray]:
    """`gru_stack` pure-dict params back to a canonical state_dict."""
    out: dict[str, np.ndarray] = {}
    for layer, entry in state["layers"].items():
        cells = (
            [entry["forward_rnn"]["cell"], entry["backward_rnn"]["cell"]] if "forward_rnn" in entry else [entry["cell"]]
        )
        for direction, cell in enumerate(cells):
            put_cell(out, int(layer), direction, *cell_from_nnx(cell), bias=bias, where="nnx cell")
    return torch_order(out)


def nnx_gradients_to_torch(grads: Mapping[str, Any], bias: bool = False) -> dict[str, np.ndarray]:
    """Gradients w.r.t. `torch_to_nnx`'s pure-dict params as gradients w.r.t. the state_dict: its adjoint.

    Only for a GRU without biases (the only one nnx can run exactly): dense_i.bias is then a
    zero constant whose gradient is dropped. bias=True raises `Unrepresentable`: the state_dict
    would need dL/d b_hn, which nnx has no parameter to compute.
    """
    if bias:
        raise Unrepresentable(f"the gradient of b_hn can't be computed: {cannot_represent(True)[0]}")
    out: dict[str, np.ndarray] = {}
    for layer, entry in grads["layers"].items():
        cells = (
            [entry["forward_rnn"]["cell"], entry["backward_rnn"]["cell"]] if "forward_rnn" in entry else [entry["cell"]]
        )
        for direction, cell in enumerate(cells):
            g_w_ih = np.asarray(cell["dense_i"]["kernel"]).T
            g_w_hh = np.asarray(cell["dense_h"]["kernel"]).T
            put_cell_gradients(out, int(layer), direction, g_w_ih, g_w_hh, None, None, bias=False)
    return torch_order(out)


def gru_stack(input_size: int, hidden: int, num_layers: int, bidirectional: bool, time_major: bool, dtype: Any) -> Any:
    """An nnx module stacking `nnx.RNN(nnx.GRUCell)` (in `nnx.Bidirectional`) per layer.

    Meant to be built under `nnx.eval_shape` and filled with `nnx.replace_by_pure_dict`
    (no random init is ever computed). RNNs hold no rng stream (`rngs=False`); a call
    without h0 passes `rngs` so the cells' default zero carry can be made.
    Call: `module(x, h0=(L*D,B,H) or None, seq_lengths=(B,) or None)` -> (outputs, carries).
    """
    from flax import nnx

    class GruStack(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            layers = []
            for layer in range(num_layers):
                width = input_size if layer == 0 else hidden * (2 if bidirectional else 1)

                def rnn(width: int = width) -> Any:
                    cell = nnx.GRUCell(width, hidden, dtype=dtype, param_dtype=dtype, rngs=rngs)
                    return nnx.RNN(cell, time_major=time_major, return_carry=True, rngs=False)

                if bidirectional:
                    layers.append(nnx.Bidirectional(rnn(), rnn(), time_major=time_major, return_carry=True, rngs=False))
                else:
                    layers.append(rnn())
            self.layers = nnx.List(layers)

        def __call__(self, x: Any, h0: Any = None, seq_lengths: Any = None) -> tuple[Any, list[Any]]:
            carries: list[Any] = []
            d = 2 if bidirectional else 1
            for layer, module in enumerate(self.layers):
                rngs = nnx.Rngs(carry=0) if h0 is None else None
                if bidirectional:
                    init = None if h0 is None else (h0[d * layer], h0[d * layer + 1])
                    (fw, bw), x = module(x, initial_carry=init, seq_lengths=seq_lengths, rngs=rngs)
                    carries += [fw, bw]
                else:
                    init = None if h0 is None else h0[layer]
                    carry, x = module(x, initial_carry=init, seq_lengths=seq_lengths, rngs=rngs)
                    carries.append(carry)
            return x, carries

    return GruStack(nnx.Rngs(0))
