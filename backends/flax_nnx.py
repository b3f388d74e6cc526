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
from typing import Any

from backends.converters import flax_nnx as conv
from backends.jax_common import (
    JaxBackend,
    configure_jax,
    gpu_seen,
    host_array,
    host_lengths,
    jnp_dtype,
    precision_notes,
    to_numpy,
    x64_scope,
)
from conformance.case import Case
from conformance.data import GruOutput, Inputs, Weights


@dataclass
class FlaxNnxGru(JaxBackend):
    family: str = "flax-nnx"
    modules: tuple[str, ...] = ("jax", "flax.nnx")

    def supports(self, case: Case) -> str | None:
        lost = conv.cannot_represent(case.bias)
        return "; ".join(lost) if lost else None

    def describe(self) -> dict[str, Any]:
        import flax

        return {
            **precision_notes(self.precision),
            "flax": flax.__version__,
            "modules": "flax.nnx.GRUCell in nnx.RNN / nnx.Bidirectional, one per layer",
            "variable_lengths": "nnx.RNN seq_lengths (padded outputs not zeroed)",
            "folds": conv.FOLDS,
            "cannot_represent": conv.cannot_represent(True),
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

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        configure_jax()
        with x64_scope(case.dtype, self.precision):
            program = self.program(case)
            params = self.put(conv.torch_to_nnx(weights.tensors))
            x = self.put(host_array(inputs.x, case.dtype))
            h0 = self.put(host_array(inputs.h0, case.dtype))
            lengths = self.put(host_lengths(inputs.lengths))
            output, h_n = program(params, x, h0, lengths)
            return GruOutput(output=to_numpy(output), h_n=to_numpy(h_n))


def backends() -> Iterator[FlaxNnxGru]:
    """flax-nnx[cpu] always (possibly unavailable), flax-nnx[cuda] when jax sees a GPU."""
    yield FlaxNnxGru(device="cpu")
    if gpu_seen():
        yield FlaxNnxGru(device="cuda")
