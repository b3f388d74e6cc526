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
from types import ModuleType
from typing import Any

import numpy as np

from backends.converters import flax_linen as conv
from backends.jax_common import (
    JaxBackend,
    gpu_seen,
    jnp_dtype,
)
from conformance.case import Case


@dataclass
class FlaxLinenGru(JaxBackend):
    family: str = "flax-linen"
    modules: tuple[str, ...] = ("jax", "flax.linen")
    library: tuple[str, ...] = ("flax",)

    def converter(self) -> ModuleType:
        return conv

    def convert(self, tensors: dict[str, np.ndarray]) -> Any:
        return conv.torch_to_linen(tensors)

    def convert_gradients(self, grads: Any, case: Case) -> dict[str, np.ndarray]:
        return conv.linen_gradients_to_torch(grads, bias=case.bias)

    def library_notes(self) -> dict[str, Any]:
        import flax

        return {
            "flax": flax.__version__,
            "modules": "flax.linen.GRUCell in nn.RNN / nn.Bidirectional, one per layer",
            "variable_lengths": "nn.RNN seq_lengths (padded outputs not zeroed, per flax docs)",
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


def backends() -> Iterator[FlaxLinenGru]:
    """flax-linen[cpu] always (possibly unavailable), flax-linen[cuda] when jax sees a GPU."""
    yield FlaxLinenGru(device="cpu")
    if gpu_seen():
        yield FlaxLinenGru(device="cuda")
