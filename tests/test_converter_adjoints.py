"""Each converter's gradient adjoint is exactly the transpose of its conversion, and wrong adjoints are caught.

A converter C is linear in the weights (a transposition, a gate permutation, a fold a + b), so
its adjoint C^T is pinned down by <C^T g, dW> = <g, C dW> for every library-layout gradient g
and state_dict dW. Both sides are sums of the same products in float64, so they agree to
float64 rounding: relative to the sum of |terms|, within BOUND = 1e-13 (a few hundred terms of
unit roundoff 1.1e-16; measured ~1e-16). A wrong adjoint moves a whole block of terms: a folded
bias whose gradient goes to only one of its two parameters misses the other's terms entirely.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from backends.converters import Unrepresentable, gates
from backends.converters import equinox_gru as eqx_conv
from backends.converters import flax_linen as linen_conv
from backends.converters import flax_nnx as nnx_conv
from backends.converters import keras_gru as keras_conv
from conformance.case import Case
from conformance.data import case_data

BOUND = 1e-13
BI = Case(3, 4, num_layers=2, bidirectional=True, dtype="float64")
UNI = Case(5, 3, num_layers=3, dtype="float64")
NOBIAS = Case(3, 4, num_layers=2, bidirectional=True, bias=False, dtype="float64")


def state_dict(case: Case) -> dict[str, np.ndarray]:
    return dict(case_data(case)[0].tensors)


def tree_map(fn: Callable[[np.ndarray], Any], tree: Any) -> Any:
    """Map over the numpy leaves of nested dicts and lists; equinox modules through jax's tree."""
    if isinstance(tree, dict):
        return {k: tree_map(fn, v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(tree_map(fn, v) for v in tree)
    if isinstance(tree, np.ndarray):
        return fn(tree)
    import jax

    return jax.tree.map(lambda leaf: fn(np.asarray(leaf)), tree)


def leaves(tree: Any) -> list[np.ndarray]:
    found: list[np.ndarray] = []
    tree_map(found.append, tree)
    return found


def products(a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
    """Every elementwise product of two equally shaped lists of arrays, flat, in float64."""
    assert [x.shape for x in a] == [y.shape for y in b]
    return np.concatenate(
        [(np.asarray(x, np.float64) * np.asarray(y, np.float64)).ravel() for x, y in zip(a, b, strict=True)]
    )


def adjoint_errors(
    convert: Callable[[dict[str, np.ndarray]], Any],
    adjoint: Callable[[Any], dict[str, np.ndarray]],
    case: Case,
    seed: int = 0,
) -> dict[str, float]:
    """Per state_dict tensor k: |<C^T g, dW_k> - <g, C dW_k>| relative to the sum of |terms|, for a random
    library-layout g and dW_k = the case's weights in tensor k, zero elsewhere (so a wrong adjoint is named)."""
    weights = state_dict(case)
    rng = np.random.default_rng(seed)
    g = tree_map(lambda leaf: rng.uniform(-1.0, 1.0, leaf.shape), convert(weights))
    back = adjoint(g)
    assert list(back) == list(weights), "the adjoint must give a gradient for every state_dict tensor, in its order"
    assert all(back[k].shape == weights[k].shape for k in weights)
    errors = {}
    for name, value in weights.items():
        d_w = {k: (value if k == name else np.zeros_like(v)) for k, v in weights.items()}
        lhs = products([back[name]], [value])
        rhs = products(leaves(g), leaves(convert(d_w)))
        errors[name] = abs(float(lhs.sum() - rhs.sum())) / float(np.abs(lhs).sum() + np.abs(rhs).sum())
    return errors


CONVERTERS: dict[str, tuple[Callable[[dict[str, np.ndarray]], Any], Callable[[Any, Case], dict[str, np.ndarray]]]] = {
    "flax-linen": (linen_conv.torch_to_linen, lambda g, c: linen_conv.linen_gradients_to_torch(g, bias=c.bias)),
    "flax-nnx": (nnx_conv.torch_to_nnx, lambda g, c: nnx_conv.nnx_gradients_to_torch(g, bias=c.bias)),
    "equinox": (eqx_conv.torch_to_equinox, lambda g, c: eqx_conv.equinox_gradients_to_torch(g, bias=c.bias)),
    "keras": (
        keras_conv.torch_to_keras,
        lambda g, c: keras_conv.keras_gradients_to_torch(g, c.bidirectional, bias=c.bias),
    ),
}


def cases_for(family: str) -> list[Case]:
    return [NOBIAS] if family == "flax-nnx" else [BI, UNI, NOBIAS]  # nnx holds no b_hn: bias=False only


def errors_of(family: str, case: Case, seed: int = 0) -> dict[str, float]:
    convert, adjoint = CONVERTERS[family]
    if family != "equinox":
        return adjoint_errors(convert, lambda g: adjoint(g, case), case, seed)
    pytest.importorskip("equinox")
    import jax

    with jax.enable_x64(case.dtype == "float64"):  # as the adapter converts: float64 cells exist only under x64
        return adjoint_errors(convert, lambda g: adjoint(g, case), case, seed)


@pytest.mark.parametrize(
    ("family", "case"), [(f, c) for f in CONVERTERS for c in cases_for(f)], ids=lambda v: getattr(v, "id", v)
)
def test_the_adjoint_is_the_transpose_of_the_conversion(family: str, case: Case) -> None:
    for seed in range(3):
        errors = errors_of(family, case, seed)
        worst = max(errors, key=errors.__getitem__)
        assert errors[worst] <= BOUND, f"{family} {worst}: <C^T g, dW> - <g, C dW> relative {errors[worst]:.2e}"


@pytest.mark.parametrize("module", [linen_conv, eqx_conv], ids=["flax-linen", "equinox"])
def test_a_folded_bias_passes_the_same_gradient_to_both_of_its_parameters(module: Any) -> None:
    """dL/d b_hr = dL/d b_ir (and z): both sit in the same sum, so the fold's adjoint copies the gradient."""
    family = "flax-linen" if module is linen_conv else "equinox"
    if family == "equinox":
        pytest.importorskip("equinox")
    convert, adjoint = CONVERTERS[family]
    rng = np.random.default_rng(1)
    back = adjoint(tree_map(lambda leaf: rng.uniform(-1, 1, leaf.shape), convert(state_dict(BI))), BI)
    for name in [n for n in back if n.startswith("bias_ih")]:
        (ir, iz, _), (hr, hz, hn) = gates(back[name]), gates(back[name.replace("bias_ih", "bias_hh")])
        assert np.array_equal(ir, hr) and np.array_equal(iz, hz)
        assert np.any(hn != 0)


def _one_sided(gradient: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The planted bug: a folded bias's gradient goes to b_i only; b_h gets none."""
    return np.array(gradient), np.zeros_like(gradient)


_RIGHT_NNX_ADJOINT = nnx_conv.nnx_gradients_to_torch


def _swapped_rz_adjoint(grads: Any, bias: bool = False) -> dict[str, np.ndarray]:
    """The planted bug: the adjoint reads the r and z blocks in each other's place."""
    right = _RIGHT_NNX_ADJOINT(grads, bias)
    return {k: np.concatenate([gates(v)[1], gates(v)[0], gates(v)[2]]) for k, v in right.items()}


# bug -> (converter, module, attribute, planted replacement, the state_dict tensors it must be caught at: a prefix)
PLANTED_ADJOINTS: dict[str, tuple[str, Any, str, Any, str]] = {
    "flax-linen: folded bias gradient to b_ir only": ("flax-linen", linen_conv, "fold_adjoint", _one_sided, "bias_hh"),
    "equinox: folded bias gradient to b_ir only": ("equinox", eqx_conv, "fold_adjoint", _one_sided, "bias_hh"),
    "keras: gates left in (z, r, n) order": ("keras", keras_conv, "_from_zrn", lambda a: np.array(a), ""),
    "flax-nnx: r and z blocks swapped": ("flax-nnx", nnx_conv, "nnx_gradients_to_torch", _swapped_rz_adjoint, "weight"),
}


@pytest.mark.parametrize("bug", list(PLANTED_ADJOINTS))
def test_a_wrong_adjoint_fails_the_identity_at_the_tensor_it_gets_wrong(
    bug: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    family, module, attribute, replacement, tensor = PLANTED_ADJOINTS[bug]
    case = cases_for(family)[0]
    assert max(errors_of(family, case).values()) <= BOUND
    monkeypatch.setattr(module, attribute, replacement)
    errors = errors_of(family, case)
    wrong = {name for name, error in errors.items() if error > 1e6 * BOUND}
    assert wrong == {name for name in errors if name.startswith(tensor)}, errors
    assert all(errors[name] <= BOUND for name in errors if name not in wrong), errors


def test_nnx_refuses_the_gradient_of_b_hn_it_cannot_compute() -> None:
    with pytest.raises(Unrepresentable, match="b_hn"):
        nnx_conv.nnx_gradients_to_torch(nnx_conv.torch_to_nnx(state_dict(NOBIAS)), bias=True)


def test_keras_adjoint_is_its_inverse_conversion() -> None:
    """Keras's conversion is a permutation, so its adjoint must equal its way back, bit for bit."""
    converted = keras_conv.torch_to_keras(state_dict(BI))
    back = keras_conv.keras_gradients_to_torch(converted, True)
    inverse = keras_conv.keras_to_torch(converted, True)
    assert list(back) == list(inverse) and all(np.array_equal(back[k], inverse[k]) for k in back)
