"""PyTorch `nn.GRU` weights <-> `flax.linen.GRUCell` params, plus the stack module they fit.

`flax.linen.GRUCell` (flax 0.12.8, recurrent.py) holds six Dense layers per cell:
`ir`, `iz`, `in` (kernel (in, H) and bias) and `hr`, `hz` (kernel (H, H), no bias) and
`hn` (kernel and bias). Its math is PyTorch's with b_hr and b_hz missing:

    r = sigmoid(x @ ir.kernel + ir.bias + h @ hr.kernel)
    z = sigmoid(x @ iz.kernel + iz.bias + h @ hz.kernel)
    n = tanh(x @ in.kernel + in.bias + r * (h @ hn.kernel + hn.bias))

Fold rules: ir.bias = b_ir + b_hr, iz.bias = b_iz + b_hz, in.bias = b_in, hn.bias = b_hn;
kernels are the transposed (r, z, n) blocks. Everything PyTorch has fits: only the split
of b_ir/b_hr and b_iz/b_hz is lost, and the way back puts the sums in bias_ih (bias_hh
r and z slots zero). `bias=False` maps to zero biases (GRUCell always has them).

Gradients come back through `linen_gradients_to_torch`, the adjoint of `torch_to_linen`:
kernels transposed back into their (r, z, n) blocks, and ir.bias's (iz.bias's) gradient
to both b_ir and b_hr (b_iz and b_hz).

Param tree: `{"cell_l{k}[_reverse]": {<dense name>: {"kernel", "bias"}}}` under "params",
the names `gru_stack` gives its cells, mirroring the state_dict suffixes.
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
    fold_adjoint,
    gates,
    layout,
    put_cell,
    put_cell_gradients,
    suffix,
    torch_order,
)


def cannot_represent(bias: bool) -> list[str]:
    """Nothing of PyTorch's GRU is out of reach of linen's GRUCell."""
    return []


FOLDS = ["b_hr -> ir.bias (+ b_ir)", "b_hz -> iz.bias (+ b_iz)"]


def cell_to_linen(
    w_ih: np.ndarray, w_hh: np.ndarray, b_ih: np.ndarray | None, b_hh: np.ndarray | None
) -> dict[str, dict[str, np.ndarray]]:
    """One PyTorch cell as a linen GRUCell's params (numpy, dtype kept)."""
    hidden = w_hh.shape[1]
    (wi_r, wi_z, wi_n), (wh_r, wh_z, wh_n) = gates(w_ih), gates(w_hh)
    (bi_r, bi_z, bi_n), (bh_r, bh_z, bh_n) = bias_gates(b_ih, b_hh, hidden, w_hh.dtype)

    def t(w: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(w.T)

    return {
        "ir": {"kernel": t(wi_r), "bias": fold(bi_r, bh_r)},
        "iz": {"kernel": t(wi_z), "bias": fold(bi_z, bh_z)},
        "in": {"kernel": t(wi_n), "bias": np.array(bi_n)},
        "hr": {"kernel": t(wh_r)},
        "hz": {"kernel": t(wh_z)},
        "hn": {"kernel": t(wh_n), "bias": np.array(bh_n)},
    }


def cell_from_linen(
    params: Mapping[str, Mapping[str, Any]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A linen GRUCell's params as (w_ih, w_hh, b_ih, b_hh): folded sums in b_ih, b_hh r/z zero."""
    p = {name: {k: np.asarray(v) for k, v in dense.items()} for name, dense in params.items()}
    w_ih = np.concatenate([p["ir"]["kernel"].T, p["iz"]["kernel"].T, p["in"]["kernel"].T])
    w_hh = np.concatenate([p["hr"]["kernel"].T, p["hz"]["kernel"].T, p["hn"]["kernel"].T])
    b_ih = np.concatenate([p["ir"]["bias"], p["iz"]["bias"], p["in"]["bias"]])
    zeros = np.zeros_like(p["hn"]["bias"])
    b_hh = np.concatenate([zeros, zeros, p["hn"]["bias"]])
    return w_ih, w_hh, b_ih, b_hh


def torch_to_linen(tensors: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """A full nn.GRU state_dict as the variables of `gru_stack` (`{"params": ...}`)."""
    layers, bidirectional, _ = layout(tensors)
    params = {}
    for layer in range(layers):
        for direction in range(2 if bidirectional else 1):
            params["cell" + suffix(layer, direction)] = cell_to_linen(*cell_tensors(tensors, layer, direction))
    return {"params": params}


def linen_to_torch(variables: Mapping[str, Any], bias: bool = True) -> dict[str, np.ndarray]:
    """`gru_stack` variables back to a canonical state_dict (canonical bias split, see module doc)."""
    params = variables["params"]
    out: dict[str, np.ndarray] = {}
    for name, cell in params.items():
        if not name.startswith("cell_l"):
            raise Unrepresentable(f"unexpected linen param {name!r}: not a cell of gru_stack")
        layer = int(name[len("cell_l") :].split("_")[0])
        put_cell(out, layer, int(name.endswith("_reverse")), *cell_from_linen(cell), bias=bias, where="linen cell")
    return torch_order(out)


def cell_gradients_from_linen(
    grads: Mapping[str, Mapping[str, Any]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The adjoint of `cell_to_linen`: a GRUCell's parameter gradients as (dW_ih, dW_hh, db_ih, db_hh)."""
    g = {name: {k: np.asarray(v) for k, v in dense.items()} for name, dense in grads.items()}
    g_w_ih = np.concatenate([g["ir"]["kernel"].T, g["iz"]["kernel"].T, g["in"]["kernel"].T])
    g_w_hh = np.concatenate([g["hr"]["kernel"].T, g["hz"]["kernel"].T, g["hn"]["kernel"].T])
    (g_b_ir, g_b_hr), (g_b_iz, g_b_hz) = fold_adjoint(g["ir"]["bias"]), fold_adjoint(g["iz"]["bias"])
    g_b_ih = np.concatenate([g_b_ir, g_b_iz, g["in"]["bias"]])
    g_b_hh = np.concatenate([g_b_hr, g_b_hz, g["hn"]["bias"]])
    return g_w_ih, g_w_hh, g_b_ih, g_b_hh


def linen_gradients_to_torch(grads: Mapping[str, Any], bias: bool = True) -> dict[str, np.ndarray]:
    """Gradients w.r.t. `torch_to_linen`'s variables as gradients w.r.t. the state_dict: its adjoint.

    `grads` has the variables' structure (`{"params": {"cell_l0": ...}}`, e.g. what `jax.vjp`
    returns for them). A folded bias's gradient goes to both halves of the fold; with
    bias=False the gradients of linen's (zero, constant) biases are dropped.
    """
    out: dict[str, np.ndarray] = {}
    for name, cell in grads["params"].items():
        if not name.startswith("cell_l"):
            raise Unrepresentable(f"unexpected linen param {name!r}: not a cell of gru_stack")
        layer = int(name[len("cell_l") :].split("_")[0])
        put_cell_gradients(out, layer, int(name.endswith("_reverse")), *cell_gradients_from_linen(cell), bias=bias)
    return torch_order(out)


def gru_stack(hidden: int, num_layers: int, bidirectional: bool, time_major: bool, dtype: Any) -> Any:
    """A linen module stacking `nn.RNN(nn.GRUCell)` (wrapped in `nn.Bidirectional`) per layer.

    Called as `module.apply(variables, x, h0=(L*D,B,H) or None, seq_lengths=(B,) or None)`,
    returns (outputs, carries) with carries a list ordered like PyTorch's h_n.
    """
    import flax.linen as nn

    class GruStack(nn.Module):
        @nn.compact
        def __call__(self, x: Any, h0: Any = None, seq_lengths: Any = None) -> tuple[Any, list[Any]]:
            carries = []
            d = 2 if bidirectional else 1
            for layer in range(num_layers):

                def cell(direction: int, layer: int = layer) -> Any:
                    return nn.GRUCell(hidden, dtype=dtype, param_dtype=dtype, name="cell" + suffix(layer, direction))

                if bidirectional:
                    birnn = nn.Bidirectional(nn.RNN(cell(0)), nn.RNN(cell(1)), time_major=time_major, return_carry=True)
                    init = None if h0 is None else (h0[d * layer], h0[d * layer + 1])
                    (fw, bw), x = birnn(x, initial_carry=init, seq_lengths=seq_lengths)
                    carries += [fw, bw]
                else:
                    rnn = nn.RNN(cell(0), time_major=time_major, return_carry=True)
                    init = None if h0 is None else h0[layer]
                    carry, x = rnn(x, initial_carry=init, seq_lengths=seq_lengths)
                    carries.append(carry)
            return x, carries

    return GruStack()
