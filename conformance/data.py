"""Deterministic case data: PyTorch-layout weights, inputs, h0 and lengths.

Every tensor has its own random stream, keyed by (seed, case structure, tensor
name), and is drawn from PCG64's raw 64-bit output. Raw PCG64 output is fixed by
the algorithm, unlike numpy's distribution methods, so the data is identical on
every machine and with every numpy or backend version. Values are drawn in
float64, then rounded to the case dtype; the oracle sees the rounded values.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from conformance.case import Case
from conformance.dtypes import quantize


@dataclass(frozen=True)
class Weights:
    """Canonical weights: named exactly as `nn.GRU().state_dict()`, gate order (r, z, n)."""

    tensors: dict[str, np.ndarray]

    def cell(self, layer: int, direction: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(weight_ih, weight_hh, bias_ih, bias_hh) of one layer and direction (1 = reverse)."""
        sfx = f"_l{layer}" + ("_reverse" if direction else "")
        return (
            self.tensors["weight_ih" + sfx],
            self.tensors["weight_hh" + sfx],
            self.tensors.get("bias_ih" + sfx),
            self.tensors.get("bias_hh" + sfx),
        )


@dataclass(frozen=True)
class Inputs:
    """x in the case's layout ((B,T,I) if batch_first else (T,B,I)), h0 as (L*D,B,H)."""

    x: np.ndarray
    h0: np.ndarray | None
    lengths: np.ndarray | None  # int64 (batch,), None for a dense batch


@dataclass(frozen=True)
class GruOutput:
    """What a GRU returns, in PyTorch's layout: output as x's layout with D*H units, h_n (L*D,B,H)."""

    output: np.ndarray
    h_n: np.ndarray


@dataclass(frozen=True)
class Cotangents:
    """The seeds of a backward check's vector-Jacobian product: L = <output, G_out> + <h_n, G_h>.

    `output` has output's layout and is zero at padded positions (they are outside L);
    `h_n` is (L*D,B,H). See `conformance.oracle_backward`.
    """

    output: np.ndarray
    h_n: np.ndarray


# dL/d(input) by name: "x" (x's layout), "h0" (only when the case gives h0), then every
# parameter named as `param_names(case)`. What a differentiable backend returns.
GradientTensors = Mapping[str, np.ndarray]


def param_names(case: Case) -> list[str]:
    """state_dict keys of `nn.GRU` for this case, in torch's order."""
    names = []
    for layer in range(case.num_layers):
        for direction in range(case.num_directions):
            sfx = f"_l{layer}" + ("_reverse" if direction else "")
            kinds = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if case.bias else [])
            names += [k + sfx for k in kinds]
    return names


def param_shape(case: Case, name: str) -> tuple[int, ...]:
    h = case.hidden_size
    layer = int(name.split("_l")[1].split("_")[0])
    if name.startswith("weight_ih"):
        return (3 * h, case.input_size if layer == 0 else h * case.num_directions)
    if name.startswith("weight_hh"):
        return (3 * h, h)
    return (3 * h,)


def _stream_key(case: Case) -> int:
    """Data depends on everything in the case but the seed, which enters separately."""
    return zlib.crc32(case.id.rsplit("-s", 1)[0].encode())


def uniform(case: Case, tensor: str, shape: tuple[int, ...], low: float, high: float) -> np.ndarray:
    """float64 uniform draws in [low, high) from this tensor's own PCG64 stream."""
    seq = np.random.SeedSequence([case.seed, _stream_key(case), zlib.crc32(tensor.encode())])
    bits = np.random.PCG64(seq).random_raw(int(np.prod(shape, dtype=np.int64)))
    unit = (np.asarray(bits, dtype=np.uint64) >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return (low + (high - low) * unit).reshape(shape)


def make_weights(case: Case) -> Weights:
    """U(-1/sqrt(H), 1/sqrt(H)) like torch's reset_parameters; no bias is ever zero."""
    bound = 1.0 / np.sqrt(case.hidden_size)
    tensors = {}
    for name in param_names(case):
        values = uniform(case, name, param_shape(case, name), -bound, bound)
        if name.startswith("bias"):
            # A zero bias would hide a dropped bias; push any draw near 0 away from it.
            tiny = bound / 64
            values = np.where(np.abs(values) < tiny, np.copysign(tiny, values), values)
        tensors[name] = quantize(values, case.dtype)
    return Weights(tensors)


def make_lengths(case: Case) -> np.ndarray | None:
    """Per-item valid lengths. sorted/unsorted always contain 1 and seq_len; zero contains 0 (first) and seq_len (last)."""
    if case.lengths == "dense":
        return None
    if case.lengths == "full":
        return np.full(case.batch, case.seq_len, dtype=np.int64)
    if case.lengths == "zero":
        # The empty item first and a full one last: unsorted, and the batch still spans seq_len steps.
        draws = uniform(case, "lengths", (case.batch,), 1, case.seq_len + 1).astype(np.int64)
        draws = np.clip(draws, 1, case.seq_len)
        draws[0], draws[-1] = 0, case.seq_len
        return draws
    draws = uniform(case, "lengths", (case.batch,), 1, case.seq_len + 1).astype(np.int64)
    draws = np.clip(draws, 1, case.seq_len)
    draws[0], draws[1] = case.seq_len, 1
    lengths = np.sort(draws)[::-1].copy()  # descending, as enforce_sorted=True wants
    if case.lengths == "unsorted":
        lengths = np.roll(lengths, -1)  # moves seq_len to the end: never descending
    return lengths


def make_inputs(case: Case) -> Inputs:
    t, b = case.seq_len, case.batch
    shape = (b, t, case.input_size) if case.batch_first else (t, b, case.input_size)
    x = quantize(uniform(case, "x", shape, -1.0, 1.0), case.dtype)
    h0 = None
    if case.initial_state:
        h0_shape = (case.num_layers * case.num_directions, b, case.hidden_size)
        h0 = quantize(uniform(case, "h0", h0_shape, -1.0, 1.0), case.dtype)
    return Inputs(x=x, h0=h0, lengths=make_lengths(case))


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


@lru_cache(maxsize=64)
def make_cotangents(case: Case) -> Cotangents:
    """U(-1, 1) seeds from the case's own streams ("cotangent-output", "cotangent-h_n": the inputs'
    streams are untouched), rounded to the case dtype like the inputs; zero at padded positions."""
    directions_units = case.num_directions * case.hidden_size
    t, b = case.seq_len, case.batch
    shape = (b, t, directions_units) if case.batch_first else (t, b, directions_units)
    g_out = uniform(case, "cotangent-output", shape, -1.0, 1.0)
    lengths = case_data(case)[1].lengths
    valid = np.arange(t)[:, None] < (np.full(b, t) if lengths is None else lengths)[None, :]  # (T,B)
    g_out = np.where((valid.T if case.batch_first else valid)[:, :, None], g_out, 0.0)
    g_h = uniform(case, "cotangent-h_n", (case.num_layers * case.num_directions, b, case.hidden_size), -1.0, 1.0)
    return Cotangents(output=_read_only(quantize(g_out, case.dtype)), h_n=_read_only(quantize(g_h, case.dtype)))


@lru_cache(maxsize=64)
def case_data(case: Case) -> tuple[Weights, Inputs]:
    """Weights and inputs of a case; cached because every backend checks the same case.

    The cached arrays are read-only, but a backend never sees them: it gets `fresh` copies.
    """
    weights, inputs = make_weights(case), make_inputs(case)
    for array in [*weights.tensors.values(), inputs.x, inputs.h0, inputs.lengths]:
        if array is not None:
            array.setflags(write=False)
    return weights, inputs


def fresh(weights: Weights, inputs: Inputs) -> tuple[Weights, Inputs]:
    """Copies a backend may do anything with: a new dict, new writable arrays that share no memory.

    Read-only flags are not enough to isolate backends: a library that writes through
    `torch.from_numpy(inputs.x)` only warns, and an adapter may replace `weights.tensors`
    entries; with shared data either would make the next, correct backend fail. The copy
    costs microseconds (the largest case's data is tens of kilobytes).
    """

    def copy(array: np.ndarray | None) -> np.ndarray | None:
        return None if array is None else np.array(array, copy=True)

    tensors = {name: np.array(value, copy=True) for name, value in weights.tensors.items()}
    return Weights(tensors), Inputs(x=np.array(inputs.x, copy=True), h0=copy(inputs.h0), lengths=copy(inputs.lengths))
