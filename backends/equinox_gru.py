"""Equinox: `eqx.nn.GRUCell`, vmapped over the batch and scanned with `jax.lax.scan`.

Equinox ships a cell, not a sequence layer; its docs show `jax.lax.scan` over the cell as
the way to run it, and `jax.vmap` for a batch. The adapter adds only what any Equinox user
writes around a cell: a loop over layers, `scan(reverse=True)` for the reverse direction
and concatenation (forward, reverse) for a bidirectional layer's output.

Variable lengths: Equinox has no sequence-length API, so the step keeps the previous state
where a step is padding (`jnp.where(valid, new, old)`), the usual masked scan. That gives
PyTorch's h_n exactly (the reverse scan meets an item's padding first and holds h0 through
it), while a padded step's output is the held state rather than zero: a convention
difference the engine names.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from backends.converters import equinox_gru as conv
from backends.jax_common import (
    JaxBackend,
    gpu_seen,
    jnp_dtype,
)
from conformance.case import Case


@dataclass
class EquinoxGru(JaxBackend):
    family: str = "equinox"
    modules: tuple[str, ...] = ("jax", "equinox")
    library: tuple[str, ...] = ("equinox",)

    def converter(self) -> ModuleType:
        return conv

    def convert(self, tensors: dict[str, np.ndarray]) -> Any:
        return conv.torch_to_equinox(tensors)

    def convert_gradients(self, grads: Any, case: Case) -> dict[str, np.ndarray]:
        return conv.equinox_gradients_to_torch(grads, bias=case.bias)

    def library_notes(self) -> dict[str, Any]:
        import equinox

        return {
            "equinox": equinox.__version__,
            "modules": "eqx.nn.GRUCell, jax.vmap over batch, jax.lax.scan over time (reverse=True backward)",
            "variable_lengths": "masked scan: state held at padded steps; padded outputs are the held state",
        }

    def build_program(self, case: Case) -> Any:
        dtype = jnp_dtype(case.dtype)
        directions = case.num_directions

        def program(cells: Any, x: Any, h0: Any, seq_lengths: Any) -> tuple[Any, Any]:
            import jax
            import jax.numpy as jnp

            xs = x if not case.batch_first else jnp.swapaxes(x, 0, 1)  # scan runs over a leading time axis
            steps, batch = xs.shape[0], xs.shape[1]
            valid = None if seq_lengths is None else jnp.arange(steps)[:, None] < seq_lengths[None, :]
            h_n = []
            for layer in range(case.num_layers):
                outs = []
                for direction in range(directions):
                    cell = cells[layer][direction]
                    index = layer * directions + direction
                    h_init = jnp.zeros((batch, case.hidden_size), dtype) if h0 is None else h0[index]

                    def step(h: Any, inp: Any, cell: Any = cell) -> tuple[Any, Any]:
                        x_t, m_t = inp
                        h_new = jax.vmap(cell)(x_t, h)
                        if m_t is not None:
                            h_new = jnp.where(m_t[:, None], h_new, h)
                        return h_new, h_new

                    h_last, ys = jax.lax.scan(step, h_init, (xs, valid), reverse=bool(direction))
                    outs.append(ys)
                    h_n.append(h_last)
                xs = outs[0] if directions == 1 else jnp.concatenate(outs, axis=-1)
            output = xs if not case.batch_first else jnp.swapaxes(xs, 0, 1)
            return output, jnp.stack(h_n)

        return self.jit(program)


def backends() -> Iterator[EquinoxGru]:
    """equinox[cpu] always (possibly unavailable), equinox[cuda] when jax sees a GPU."""
    yield EquinoxGru(device="cpu")
    if gpu_seen():
        yield EquinoxGru(device="cuda")
