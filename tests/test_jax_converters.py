"""Converter round trips and refusals: exact where information is kept, loud where it isn't.

Pure numpy except equinox (whose cells are built with jax.eval_shape, no compile).
"""

from __future__ import annotations

import numpy as np
import pytest

from backends.converters import Unrepresentable, fold, gates
from backends.converters import equinox_gru as eqx_conv
from backends.converters import flax_linen as linen_conv
from backends.converters import flax_nnx as nnx_conv
from backends.converters import keras_gru as keras_conv
from conformance.case import Case
from conformance.data import case_data

BI = Case(input_size=3, hidden_size=4, num_layers=2, bidirectional=True, dtype="float32")
NOBIAS = Case(input_size=3, hidden_size=4, num_layers=2, bidirectional=True, bias=False, dtype="float32")


def tensors(case: Case) -> dict[str, np.ndarray]:
    return dict(case_data(case)[0].tensors)


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def canonical_fold(original: dict[str, np.ndarray], keep_b_hn: bool = True) -> dict[str, np.ndarray]:
    """What a folding converter must return on the way back: b_hr, b_hz summed into bias_ih."""
    out = {}
    for name, value in original.items():
        if name.startswith("bias_ih"):
            hh = original[name.replace("bias_ih", "bias_hh")]
            (ir, iz, in_), (hr, hz, _) = gates(value), gates(hh)
            out[name] = np.concatenate([fold(ir, hr), fold(iz, hz), in_])
        elif name.startswith("bias_hh"):
            hn = gates(value)[2] if keep_b_hn else np.zeros_like(gates(value)[2])
            out[name] = np.concatenate([np.zeros_like(hn), np.zeros_like(hn), hn])
        else:
            out[name] = value
    return out


@pytest.mark.parametrize("case", [BI, NOBIAS], ids=["bias", "nobias"])
def test_keras_round_trip_is_exact(case: Case) -> None:
    original = tensors(case)
    back = keras_conv.keras_to_torch(keras_conv.torch_to_keras(original), case.bidirectional, bias=case.bias)
    assert_same(back, original)


def test_keras_gate_order_is_z_r_h() -> None:
    """Keras's kernel columns are (z, r, h): the r block of PyTorch must land in the middle."""
    original = tensors(BI)
    kernel = keras_conv.torch_to_keras(original)[0][0]
    r, z, n = gates(original["weight_ih_l0"])
    np.testing.assert_array_equal(kernel[:, :4], z.T)
    np.testing.assert_array_equal(kernel[:, 4:8], r.T)
    np.testing.assert_array_equal(kernel[:, 8:], n.T)


def test_linen_round_trip_folds_exactly_and_is_idempotent() -> None:
    original = tensors(BI)
    variables = linen_conv.torch_to_linen(original)
    back = linen_conv.linen_to_torch(variables)
    assert_same(back, canonical_fold(original))  # weights, b_in, b_hn exact; r/z sums in bias_ih
    again = linen_conv.torch_to_linen(back)
    for path, leaf in _leaves(variables):
        np.testing.assert_array_equal(leaf, dict(_leaves(again))[path], err_msg=path)


def test_linen_has_b_hn_and_no_hr_bias() -> None:
    cell = linen_conv.torch_to_linen(tensors(BI))["params"]["cell_l0"]
    assert set(cell) == {"ir", "iz", "in", "hr", "hz", "hn"}
    assert "bias" not in cell["hr"] and "bias" not in cell["hz"] and "bias" in cell["hn"]
    np.testing.assert_array_equal(cell["hn"]["bias"], gates(tensors(BI)["bias_hh_l0"])[2])


def test_linen_nobias_maps_to_zero_biases_and_back() -> None:
    original = tensors(NOBIAS)
    variables = linen_conv.torch_to_linen(original)
    assert all(not np.any(leaf) for path, leaf in _leaves(variables) if path.endswith("bias"))
    assert_same(linen_conv.linen_to_torch(variables, bias=False), original)


def test_way_back_without_bias_refuses_to_drop_nonzero_biases() -> None:
    with pytest.raises(Unrepresentable, match="nonzero"):
        linen_conv.linen_to_torch(linen_conv.torch_to_linen(tensors(BI)), bias=False)
    with pytest.raises(Unrepresentable, match="nonzero"):
        nnx_conv.nnx_to_torch(nnx_conv.torch_to_nnx(_without_b_hn(tensors(BI))), bias=False)


def test_nnx_refuses_b_hn() -> None:
    with pytest.raises(Unrepresentable, match="b_hn"):
        nnx_conv.torch_to_nnx(tensors(BI))
    assert nnx_conv.cannot_represent(True) and not nnx_conv.cannot_represent(False)


def test_nnx_round_trip_where_b_hn_is_zero() -> None:
    original = _without_b_hn(tensors(BI))
    back = nnx_conv.nnx_to_torch(nnx_conv.torch_to_nnx(original))
    assert_same(back, canonical_fold(original, keep_b_hn=False))
    assert_same(nnx_conv.nnx_to_torch(nnx_conv.torch_to_nnx(tensors(NOBIAS)), bias=False), tensors(NOBIAS))


@pytest.mark.parametrize("case", [BI, NOBIAS], ids=["bias", "nobias"])
def test_equinox_round_trip(case: Case) -> None:
    pytest.importorskip("equinox")
    original = tensors(case)
    cells = eqx_conv.torch_to_equinox(original)
    assert all(cell.use_bias == case.bias for layer in cells for cell in layer)
    back = eqx_conv.equinox_to_torch(cells)
    assert_same(back, canonical_fold(original) if case.bias else original)
    if case.bias:
        np.testing.assert_array_equal(cells[0][0].bias_n, gates(original["bias_hh_l0"])[2])


@pytest.mark.parametrize("dtype", ["float64", "float16", "bfloat16"])
def test_converters_keep_the_dtype(dtype: str) -> None:
    original = tensors(Case(input_size=3, hidden_size=4, dtype=dtype))
    for _, leaf in _leaves(linen_conv.torch_to_linen(original)):
        assert leaf.dtype == original["weight_ih_l0"].dtype
    for leaf in keras_conv.torch_to_keras(original)[0]:
        assert leaf.dtype == original["weight_ih_l0"].dtype


def _without_b_hn(original: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = dict(original)
    for name, value in original.items():
        if name.startswith("bias_hh"):
            value = value.copy()
            value[2 * (value.shape[0] // 3) :] = 0
            out[name] = value
    return out


def _leaves(tree: object, prefix: str = "") -> list[tuple[str, np.ndarray]]:
    if isinstance(tree, dict):
        return [item for key, sub in tree.items() for item in _leaves(sub, f"{prefix}/{key}")]
    return [(prefix, np.asarray(tree))]
