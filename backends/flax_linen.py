"""Flax linen: `nn.GRUCell` in `nn.RNN`, wrapped in `nn.Bidirectional`, one RNN per layer.

Everything is the library's own: `time_major` for layout, `seq_lengths` for variable
lengths (linen keeps padding at the end when flipping the reverse direction and returns the
carry of each item's last valid step), `initial_carry` for h0, and the cell's dtype and
param_dtype for the case dtype. Padded outputs are whatever linen computes there (not
zeroed): per its docs, a convention difference the engine reports as such.
Weights come from `backends.converters.flax_linen` (b_hr, b_hz folded; exact).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from backends.converters import flax_linen as conv
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
class FlaxLinenGru(JaxBackend):
    family: str = "flax-linen"
    modules: tuple[str, ...] = ("jax", "flax.linen")

    def supports(self, case: Case) -> str | None:
        lost = conv.cannot_represent(case.bias)
        return "; ".join(lost) if lost else None

    def describe(self) -> dict[str, Any]:
        import flax

        return {
            **precision_notes(self.precision),
            "flax": flax.__version__,
            "modules": "flax.linen.GRUCell in nn.RNN / nn.Bidirectional, one per layer",
            "variable_lengths": "nn.RNN seq_lengths (padded outputs not zeroed, per flax docs)",
            "folds": conv.FOLDS,
            "cannot_represent": conv.cannot_represent(True),
        }

    def build_program(self, case: Case) -> Any:
        module = conv.gru_stack(
            case.hidden_size, case.num_layers, case.bidirectional, not case.batch_first, jnp_dtype(case.dtype)
        )

        def program(variables: Any, x: Any, h0: Any, seq_lengths: Any) -> tuple[Any, Any]:
            import jax.numpy as jnp

            output, carries = module.apply(variables, x, h0=h0, seq_lengths=seq_lengths)
            return output, jnp.stack(carries)

        return self.jit(program)

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        configure_jax()
        with x64_scope(case.dtype, self.precision):
            program = self.program(case)
            variables = self.put(conv.torch_to_linen(weights.tensors))
            x = self.put(host_array(inputs.x, case.dtype))
            h0 = self.put(host_array(inputs.h0, case.dtype))
            lengths = self.put(host_lengths(inputs.lengths))
            output, h_n = program(variables, x, h0, lengths)
            return GruOutput(output=to_numpy(output), h_n=to_numpy(h_n))


def backends() -> Iterator[FlaxLinenGru]:
    """flax-linen[cpu] always (possibly unavailable), flax-linen[cuda] when jax sees a GPU."""
    yield FlaxLinenGru(device="cpu")
    if gpu_seen():
        yield FlaxLinenGru(device="cuda")
