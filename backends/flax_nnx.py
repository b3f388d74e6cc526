"""Flax nnx: `nnx.GRUCell` in `nnx.RNN`, wrapped in `nnx.Bidirectional`, one RNN per layer.

The stack is built once per structure under `nnx.eval_shape` (no random init computed),
split into graphdef + params, and the jitted program merges in the converted params
(`nnx.replace_by_pure_dict`), the documented functional nnx pattern. Layout, lengths and
h0 go through nnx.RNN's own `time_major`, `seq_lengths` and `initial_carry`.

nnx.GRUCell has no recurrent bias, so b_hn can't be represented: every case with
bias=True is declared unsupported (see `backends.converters.flax_nnx`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from backends.converters import flax_nnx as conv
from backends.jax_common import (
    JaxBackend,
    gpu_seen,
    jnp_dtype,
)
from conformance.case import Case


@dataclass
class FlaxNnxGru(JaxBackend):
    family: str = "flax-nnx"
    modules: tuple[str, ...] = ("jax", "flax.nnx")
    library: tuple[str, ...] = ("flax",)

    def converter(self) -> ModuleType:
        return conv

    def convert(self, tensors: dict[str, np.ndarray]) -> Any:
        return conv.torch_to_nnx(tensors)

    def convert_gradients(self, grads: Any, case: Case) -> dict[str, np.ndarray]:
        return conv.nnx_gradients_to_torch(grads, bias=case.bias)

    def library_notes(self) -> dict[str, Any]:
        import flax

        return {
            "flax": flax.__version__,
            "modules": "flax.nnx.GRUCell in nnx.RNN / nnx.Bidirectional, one per layer",
            "variable_lengths": "nnx.RNN seq_lengths (padded outputs not zeroed)",
        }

    def build_program(self, case: Case) -> Any:
        from flax import nnx

        dtype = jnp_dtype(case.dtype)
        abstract = nnx.eval_shape(
            lambda: conv.gru_stack(
                case.input_size, case.hidden_size, case.num_layers, case.bidirectional, not case.batch_first, dtype
            )
        )
        graphdef, params_template = nnx.split(abstract)

        def program(params: Any, x: Any, h0: Any, seq_lengths: Any) -> tuple[Any, Any]:
            import jax
            import jax.numpy as jnp

            state = jax.tree.map(lambda a: a, params_template)  # a fresh State to fill in
            nnx.replace_by_pure_dict(state, params)
            model = nnx.merge(graphdef, state)
            output, carries = model(x, h0=h0, seq_lengths=seq_lengths)
            return output, jnp.stack(carries)

        return self.jit(program)


def backends() -> Iterator[FlaxNnxGru]:
    """flax-nnx[cpu] always (possibly unavailable), flax-nnx[cuda] when jax sees a GPU."""
    yield FlaxNnxGru(device="cpu")
    if gpu_seen():
        yield FlaxNnxGru(device="cuda")
