"""The JAX adapters through the real engine: exact in float64, planted converter bugs fail,
unsupported cases say why, dtypes are the backend's own, and jit compiles once per signature.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("flax")

from backends import equinox_gru, flax_linen, flax_nnx, jax_common, keras_jax
from backends.converters import equinox_gru as eqx_conv
from backends.converters import flax_linen as linen_conv
from backends.converters import flax_nnx as nnx_conv
from backends.converters import keras_gru as keras_conv
from backends.jax_common import COMPILES, REPO_ROOT, summarize, x64_scope
from conformance import divergences
from conformance.case import Case
from conformance.data import case_data, make_cotangents
from conformance.engine import check

FACTORIES: dict[str, Callable[[], Any]] = {
    "flax-linen": flax_linen.FlaxLinenGru,
    "flax-nnx": flax_nnx.FlaxNnxGru,
    "equinox": equinox_gru.EquinoxGru,
    "keras-jax": keras_jax.KerasJaxGru,
}
_BACKENDS: dict[str, Any] = {}


def backend(family: str) -> Any:
    """One adapter instance per family for the whole module, so its jit cache is shared like in a run."""
    if family not in _BACKENDS:
        _BACKENDS[family] = FACTORIES[family]()
    return _BACKENDS[family]


# Small cases covering every dimension; nnx can only run bias=False (no b_hn).
DENSE_BI_H0 = Case(3, 4, num_layers=2, bidirectional=True, batch_first=True, initial_state=True, batch=2, seq_len=4)
PACKED_BI = Case(3, 4, bidirectional=True, lengths="unsorted", batch=3, seq_len=4)


def case_for(family: str, case: Case, **changes: Any) -> Case:
    fields = {**case.as_dict(), **changes}
    if family == "flax-nnx":
        fields["bias"] = False
    return Case.from_dict(fields)


@pytest.mark.parametrize("family", list(FACTORIES))
@pytest.mark.parametrize("base", [DENSE_BI_H0, PACKED_BI], ids=["dense-bi-h0-bf", "packed-bi-tm"])
def test_float64_matches_the_oracle(family: str, base: Case) -> None:
    case = case_for(family, base, dtype="float64")
    result = check(backend(family), case, registry=divergences.load())
    output = next(c for c in result.checks if c.name == "output")
    h_n = next(c for c in result.checks if c.name == "h_n")
    if family == "keras-jax":
        # Keras computes tanh in float32 (a registered divergence): the error must be float32-sized,
        # between float64's tolerance and float32's rounding of O(1) values, not merely "some failure".
        assert result.verdict == "known_divergence", result.reason
        assert result.divergence == "keras-jax-float64-tanh-in-float32"
        for tensor in (output, h_n):
            assert tensor.max_abs is not None and tensor.tolerance is not None
            assert tensor.tolerance < tensor.max_abs < 1e-6, tensor.message
        return
    assert output.passed and h_n.passed, result.reason
    # Packed: padded outputs are the library's (not zeroed), which the engine names a convention.
    assert result.verdict == ("convention" if case.packed else "pass"), result.reason


def test_nnx_declares_b_hn_unsupported() -> None:
    result = check(backend("flax-nnx"), Case(3, 4))
    assert result.verdict == "unsupported" and "b_hn" in result.reason
    assert backend("flax-nnx").describe()["cannot_represent"]


@pytest.mark.parametrize("family", list(FACTORIES))
def test_output_dtype_is_what_the_backend_produced(family: str) -> None:
    case = case_for(family, Case(3, 4, dtype="float16", seq_len=3))
    weights, inputs = case_data(case)
    out = backend(family).run(case, weights, inputs)
    assert out.output.dtype == np.float16 and out.h_n.dtype == np.float16


# Planted converter bugs: each must turn a passing float32 case into a failing one.
def _unfolded(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array(a)  # "forgets" to add the recurrent bias


def _swap_rz_columns(original: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        cell = original(*args, **kwargs)
        kernel = cell["dense_i"]["kernel"]
        h = kernel.shape[1] // 3
        cell["dense_i"]["kernel"] = np.concatenate([kernel[:, h : 2 * h], kernel[:, :h], kernel[:, 2 * h :]], axis=1)
        return cell

    return wrapped


PLANTED = {
    "flax-linen: b_hr/b_hz not folded": ("flax-linen", linen_conv, "fold", _unfolded),
    "equinox: b_hr/b_hz not folded": ("equinox", eqx_conv, "fold", _unfolded),
    "keras-jax: gates left in (r,z,n) order": ("keras-jax", keras_conv, "_to_zrn", lambda a: np.array(a)),
    "flax-nnx: r and z kernels swapped": ("flax-nnx", nnx_conv, "cell_to_nnx", _swap_rz_columns(nnx_conv.cell_to_nnx)),
}


@pytest.mark.parametrize("bug", list(PLANTED))
def test_planted_converter_bug_fails_the_suite(bug: str, monkeypatch: pytest.MonkeyPatch) -> None:
    family, module, attribute, replacement = PLANTED[bug]
    case = case_for(family, Case(3, 4, bidirectional=True, seq_len=4))
    assert check(backend(family), case).verdict == "pass"
    monkeypatch.setattr(module, attribute, replacement)
    result = check(backend(family), case)
    assert result.verdict == "fail", result.reason


def test_new_lengths_and_seeds_do_not_recompile() -> None:
    """Same structure and shapes: one program compile in all, whatever the lengths."""
    linen = flax_linen.FlaxLinenGru()  # a fresh adapter: its own jit cache
    cases = [
        Case(3, 5, lengths=kind, batch=4, seq_len=6, seed=seed)
        for kind in ("sorted", "unsorted", "full")
        for seed in (7, 8)
    ]
    assert len({tuple(case_data(c)[1].lengths) for c in cases}) > 3
    mark = COMPILES.mark()
    for case in cases:
        weights, inputs = case_data(case)
        linen.run(case, weights, inputs)
    counts = summarize(COMPILES.since(mark))
    assert counts["program_compiles"] + counts["program_cache_hits"] == 1, counts


def test_second_process_compiles_nothing(tmp_path: Any) -> None:
    """The persistent cache: the same run in a new process is all cache hits."""
    script = (
        "import json; from backends.flax_linen import FlaxLinenGru; from backends.jax_common import COMPILES, summarize;"
        "from conformance.case import Case; from conformance.data import case_data;"
        "c = Case(2, 3, bidirectional=True, lengths='sorted', batch=2, seq_len=3); w, i = case_data(c);"
        "FlaxLinenGru().run(c, w, i); print(json.dumps(summarize(COMPILES.events)))"
    )
    env = {**os.environ, "GRU_CONFORMANCE_CACHE": str(tmp_path)}
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        for _ in range(2)
    ]
    assert runs[0]["program_compiles"] == 1
    assert runs[1]["program_compiles"] == 0 and runs[1]["setup_compiles"] == 0, runs[1]
    assert runs[1]["program_cache_hits"] == 1
    assert (tmp_path / "jax").is_dir()


# -- stored programs (jax.export): what a later process loads instead of re-tracing ------------


def _bits(array: Any) -> tuple[str, tuple[int, ...], bytes]:
    array = np.asarray(array)
    return str(array.dtype), array.shape, array.tobytes()


@pytest.mark.parametrize("family", list(FACTORIES))
def test_a_stored_program_is_bit_identical_to_the_traced_one(family: str, tmp_path: Any) -> None:
    case = case_for(family, PACKED_BI, dtype="float64" if family == "flax-linen" else "float32")
    weights, inputs = case_data(case)
    first = FACTORIES[family](programs_root=tmp_path)
    with x64_scope(case.dtype, first.precision):
        traced = first.traced(case)(*first.arguments(case, weights, inputs))
    made = first.run(case, weights, inputs)  # traced, exported, stored, compiled
    later = FACTORIES[family](programs_root=tmp_path)  # a new adapter, as in a new process: loads the stored one

    def never(_: Case) -> Any:
        raise AssertionError("a stored program must be loaded, not traced again")

    later.build_program = never  # type: ignore[method-assign]
    loaded = later.run(case, weights, inputs)
    assert later.store.has(later.signature(case))
    for got in (made, loaded):
        assert [_bits(got.output), _bits(got.h_n)] == [_bits(t) for t in traced]


def test_a_program_stored_for_other_versions_or_another_signature_is_never_loaded(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = Case(2, 3, seq_len=3)
    weights, inputs = case_data(case)
    linen = flax_linen.FlaxLinenGru(programs_root=tmp_path)
    linen.run(case, weights, inputs)
    sig, store = linen.signature(case), linen.store
    assert store.load(sig) is not None
    newer = dataclasses.replace(sig, versions=tuple((k, "99.0" if k == "jax" else v) for k, v in sig.versions))
    assert newer.key() != sig.key() and store.load(newer) is None
    # The stored files under the other signature's name (a hand-copied cache): the metadata names its own signature.
    for old, new in zip(store._paths(sig), store._paths(newer), strict=True):
        shutil.copy(old, new)
    assert store.load(newer) is None
    assert store.load(dataclasses.replace(sig, batch=sig.batch + 1)) is None  # another shape: another program
    # An adapter under another jax version traces afresh instead of loading; under the same one it loads.
    real = jax_common.versions
    for version, expect_trace in (("99.0", True), (None, False)):
        monkeypatch.setattr(jax_common, "versions", lambda p, v=version: {**real(p), **({"jax": v} if v else {})})
        again, traced = flax_linen.FlaxLinenGru(programs_root=tmp_path), []
        build = again.build_program
        again.build_program = lambda c, build=build, traced=traced: traced.append(c) or build(c)  # type: ignore[method-assign]
        again.run(case, weights, inputs)
        assert bool(traced) == expect_trace


# -- stored backward programs: the vjp, exported and loaded like the forward -------------------


def _fresh_vjp(adapter: Any, case: Case, args: tuple[Any, ...]) -> Any:
    """The vjp as the adapter built it before it was stored: jit of jax.vjp of the library's traced program."""
    import jax

    traced = adapter.traced(case)
    return jax.jit(lambda *a: jax_common._vjp(traced, *a))(*args)


def _gradient_bits(grads: Any) -> list[tuple[str, tuple[int, ...], bytes]]:
    import jax

    return [_bits(leaf) for leaf in jax.tree_util.tree_leaves(grads)]


@pytest.mark.parametrize("family", list(FACTORIES))
@pytest.mark.parametrize("base", [DENSE_BI_H0, PACKED_BI], ids=["dense-bi-h0-bf", "packed-bi-tm"])
def test_a_stored_backward_program_is_bit_identical_to_the_traced_vjp(family: str, base: Case, tmp_path: Any) -> None:
    case = case_for(family, base, dtype="float64" if family == "flax-linen" else "float32")
    weights, inputs = case_data(case)
    first = FACTORIES[family](programs_root=tmp_path)
    with x64_scope(case.dtype, first.precision):
        args = first.backward_arguments(case, weights, inputs)
        fresh = _fresh_vjp(first, case, args)
        made = first.backward_program(case, *args)(*args)  # traced, exported, stored, compiled
    later = FACTORIES[family](programs_root=tmp_path)  # a new adapter, as in a new process: loads the stored one

    def never(_: Case) -> Any:
        raise AssertionError("a stored backward program must be loaded, not traced again")

    later.build_program = never  # type: ignore[method-assign]
    with x64_scope(case.dtype, later.precision):
        args = later.backward_arguments(case, weights, inputs)
        loaded = later.backward_program(case, *args)(*args)
    assert len(fresh) == (3 if case.initial_state else 2)  # d params, d x (, d h0)
    import jax

    assert jax.tree_util.tree_structure(loaded[0]) == jax.tree_util.tree_structure(fresh[0])  # the library's tree
    for got in (made, loaded):
        assert _gradient_bits(got) == _gradient_bits(fresh)
    # The gradient check sees the same gradients through the stored program.
    tensors = later.run_backward(case, weights, inputs, make_cotangents(case))
    assert _bits(tensors["x"]) == _bits(fresh[1])


def test_a_program_stored_for_the_other_role_or_with_corrupt_metadata_is_never_loaded(tmp_path: Any) -> None:
    case = Case(2, 3, seq_len=3, initial_state=True)
    weights, inputs = case_data(case)
    linen = flax_linen.FlaxLinenGru(programs_root=tmp_path)
    linen.run(case, weights, inputs)  # stores the forward program only
    store, forward, backward = linen.store, linen.signature(case), linen.signature(case, "backward")
    assert forward.key() != backward.key() and store.load(forward) is not None and store.load(backward) is None
    # The forward's files under the backward's name (a hand-copied cache): the metadata names the forward role.
    for old, new in zip(store._paths(forward), store._paths(backward), strict=True):
        shutil.copy(old, new)
    assert store.load(backward) is None

    def counting() -> tuple[Any, list[Case]]:
        adapter, traced = flax_linen.FlaxLinenGru(programs_root=tmp_path), []
        build = adapter.build_program
        adapter.build_program = lambda c: traced.append(c) or build(c)  # type: ignore[method-assign]
        return adapter, traced

    cotangents = make_cotangents(case)
    again, traced = counting()
    again.run_backward(case, weights, inputs, cotangents)  # the planted forward program is not loaded: traced
    assert traced and store.load(backward) is not None
    again, traced = counting()
    again.run_backward(case, weights, inputs, cotangents)  # now stored under its own role: loaded
    assert not traced
    # Corrupt metadata (a torn write, a hand edit): not loaded, traced and stored again.
    meta = store._paths(backward)[0]
    meta.write_text(meta.read_text()[:-20], encoding="utf-8")
    assert store.load(backward) is None
    again, traced = counting()
    again.run_backward(case, weights, inputs, cotangents)
    assert traced and store.load(backward) is not None
    # Metadata naming another signature (its batch changed by hand) is not loaded either.
    data = json.loads(meta.read_text())
    data["signature"]["batch"] += 1
    meta.write_text(json.dumps(data), encoding="utf-8")
    assert store.load(backward) is None


def test_prepare_builds_only_the_role_asked_for_and_the_plan_counts_each(tmp_path: Any) -> None:
    case = Case(2, 3, seq_len=3)
    linen = flax_linen.FlaxLinenGru(programs_root=tmp_path)
    plan = {b.builder: b for b in [*linen.plan([case]), *linen.plan_backward([case])]}
    assert set(plan) == {"compile (flax-linen[cpu])", "compile backward (flax-linen[cpu])"}
    assert not any(b.cached for b in plan.values())
    linen.prepare([case])  # forward only: no vjp traced
    assert linen.store.has(linen.signature(case)) and not linen.store.has(linen.signature(case, "backward"))
    assert [b.cached for b in linen.plan_backward([case])] == [False]
    linen.prepare_backward([case])
    assert [b.cached for b in linen.plan_backward([case])] == [True]
    recorded = {b.builder for b in linen.recorded()}
    assert recorded == {"compile (flax-linen[cpu])", "compile backward (flax-linen[cpu])"}
