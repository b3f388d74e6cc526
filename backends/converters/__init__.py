"""Exact weight converters: canonical PyTorch `nn.GRU` state_dict <-> each JAX library's param tree.

Canonical layout (see `conformance.data.Weights`): `weight_ih_l{k}[_reverse]` (3H, in),
`weight_hh_l{k}[_reverse]` (3H, H), `bias_ih_...`/`bias_hh_...` (3H,), gates stacked (r, z, n).

Rules every converter here follows:

* Gate order, transposition and bias placement are mapped explicitly per target.
* Where the target lacks a bias, it is folded into one that sits in the same sum, which is
  exact in real arithmetic: b_hr and b_hz are added outside the sigmoid, together with
  b_ir and b_iz, so `b_ir + b_hr` can replace both. The sum is formed in float64 and rounded
  once to the parameter dtype (one correctly rounded addition, as the target would do).
* b_hn sits inside `r * (W_hn h + b_hn)`: it can't move anywhere else. A target with no
  place for it raises `Unrepresentable`, naming the parameter, unless the value is exactly
  zero (then nothing is lost). `cannot_represent(bias)` of each module says up front what a
  target can't hold, so an adapter declares those cases unsupported instead of trying.
* The way back is canonical where the forward direction folded: the folded sums go to
  `bias_ih` and the matching `bias_hh` slots are zero. So torch -> X -> torch is exact
  for every tensor it can be (weights, b_in, b_hn) and for the sums b_ih + b_hh, and
  X -> torch -> X is exact everywhere.
* Nothing is invented: `bias=False` canonical weights map to zero biases only where the
  target's cell always has biases, and the way back with `bias=False` refuses nonzero biases.

Gradients travel the other way through each converter's *adjoint* (`<lib>_gradients_to_torch`):
a converter is linear in the weights, W -> P = C(W), so dL/dW = C^T dL/dP. Its pieces are
transposes of the pieces above: a transposition or a gate reorder (a permutation) goes back
as its inverse, and a fold a + b passes its gradient to both a and b (`fold_adjoint`), since
dL/da = dL/db = dL/d(a + b). So dL/d b_hr equals dL/d b_ir exactly, as it must: the two sit in
the same sum. A zero bias the target always has but PyTorch's `bias=False` GRU doesn't
(a constant, not a parameter) has its gradient dropped. Each adjoint satisfies
<C^T g, dW> = <g, C dW> for every g and dW (tests/test_converter_adjoints.py).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


class Unrepresentable(ValueError):
    """The target can't hold this part of the PyTorch GRU; the message names it and says why."""


def suffix(layer: int, direction: int) -> str:
    """state_dict suffix of one layer and direction, e.g. `_l1_reverse`."""
    return f"_l{layer}" + ("_reverse" if direction else "")


def gates(array: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split a (3H, ...) canonical tensor into its (r, z, n) blocks."""
    hidden = array.shape[0] // 3
    return array[:hidden], array[hidden : 2 * hidden], array[2 * hidden :]


def bias_gates(
    b_ih: np.ndarray | None, b_hh: np.ndarray | None, hidden: int, dtype: np.dtype
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The (r, z, n) blocks of both biases; a missing bias reads as zeros (a GRU with one bias only)."""
    zeros = np.zeros(3 * hidden, dtype=dtype)
    return gates(zeros if b_ih is None else b_ih), gates(zeros if b_hh is None else b_hh)


def fold(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a + b formed in float64 and rounded once to a's dtype."""
    return (np.asarray(a, dtype=np.float64) + np.asarray(b, dtype=np.float64)).astype(a.dtype)


def cell_tensors(
    tensors: Mapping[str, np.ndarray], layer: int, direction: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(weight_ih, weight_hh, bias_ih, bias_hh) of one cell; biases None when the GRU has none."""
    sfx = suffix(layer, direction)
    return (
        tensors["weight_ih" + sfx],
        tensors["weight_hh" + sfx],
        tensors.get("bias_ih" + sfx),
        tensors.get("bias_hh" + sfx),
    )


def layout(tensors: Mapping[str, np.ndarray]) -> tuple[int, bool, bool]:
    """(num_layers, bidirectional, bias) read off a canonical state_dict's keys."""
    layers = 1 + max(int(k.split("_l")[1].split("_")[0]) for k in tensors if k.startswith("weight_ih"))
    return layers, any(k.endswith("_reverse") for k in tensors), any(k.startswith("bias") for k in tensors)


def put_cell(
    out: dict[str, np.ndarray],
    layer: int,
    direction: int,
    w_ih: np.ndarray,
    w_hh: np.ndarray,
    b_ih: np.ndarray | None,
    b_hh: np.ndarray | None,
    bias: bool,
    where: str,
) -> None:
    """Store one cell's canonical tensors; with bias=False, refuse to drop nonzero biases."""
    sfx = suffix(layer, direction)
    out["weight_ih" + sfx] = np.ascontiguousarray(w_ih)
    out["weight_hh" + sfx] = np.ascontiguousarray(w_hh)
    if bias:
        hidden = w_hh.shape[1]
        out["bias_ih" + sfx] = np.ascontiguousarray(b_ih if b_ih is not None else np.zeros(3 * hidden, w_hh.dtype))
        out["bias_hh" + sfx] = np.ascontiguousarray(b_hh if b_hh is not None else np.zeros(3 * hidden, w_hh.dtype))
        return
    for name, value in (("input", b_ih), ("recurrent", b_hh)):
        if value is not None and np.any(np.asarray(value, dtype=np.float64) != 0):
            raise Unrepresentable(
                f"{where}{sfx}: nonzero {name} biases, but bias=False was asked; they would be dropped"
            )


def torch_order(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same dict with keys in nn.GRU's state_dict order (layer, direction, ih/hh, weight/bias)."""
    layers, bidirectional, bias = layout(tensors)
    names = []
    for layer in range(layers):
        for direction in range(2 if bidirectional else 1):
            kinds = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if bias else [])
            names += [k + suffix(layer, direction) for k in kinds]
    return {n: tensors[n] for n in names}


def fold_adjoint(gradient: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The adjoint of `fold`: a + b passes its gradient to both a and b, unchanged."""
    return np.array(gradient), np.array(gradient)


def put_cell_gradients(
    out: dict[str, np.ndarray],
    layer: int,
    direction: int,
    g_w_ih: np.ndarray,
    g_w_hh: np.ndarray,
    g_b_ih: np.ndarray | None,
    g_b_hh: np.ndarray | None,
    bias: bool,
) -> None:
    """Store one cell's gradients under its state_dict names.

    bias=False: the GRU has no bias parameters, so gradients of the zero biases a target
    always holds (constants there, not parameters) are dropped. bias=True: both must exist.
    """
    sfx = suffix(layer, direction)
    out["weight_ih" + sfx] = np.ascontiguousarray(g_w_ih)
    out["weight_hh" + sfx] = np.ascontiguousarray(g_w_hh)
    if not bias:
        return
    if g_b_ih is None or g_b_hh is None:
        raise Unrepresentable(f"cell{sfx}: bias=True was asked, but the target's cell has no bias gradients")
    out["bias_ih" + sfx] = np.ascontiguousarray(g_b_ih)
    out["bias_hh" + sfx] = np.ascontiguousarray(g_b_hh)
