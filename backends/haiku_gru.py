"""dm-haiku: `hk.GRU`, one core per layer and direction, unrolled with `hk.dynamic_unroll`.

haiku's only GRU is the other published form (reset before the recurrent matmul), with the
opposite update-gate convention and one bias per gate, so this adapter declares
`Form(linear_before_reset=False)` and is judged against the oracle in that form; weights come
through `backends.converters.haiku_gru` (update gate negated, biases folded; exact for the form).

As haiku's users write it: `hk.transform` of a function that builds the cores, `time_major`
for the layout, `hk.dynamic_unroll(..., reverse=True)` for the backward direction of a
bidirectional layer (haiku has no bidirectional wrapper) and the two directions concatenated
as the next layer's input. `hk.dynamic_unroll` takes no sequence lengths or mask, so a packed
batch is unsupported. h0 is each core's initial state; without it, `core.initial_state`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from backends.converters import haiku_gru as conv
from backends.jax_common import JaxBackend, gpu_seen
from conformance.case import Case
from conformance.forms import Form

RESET_BEFORE_MATMUL = Form(linear_before_reset=False)
NO_LENGTHS = "haiku has no sequence lengths: hk.dynamic_unroll(core, input_sequence, initial_state, ...) takes no mask"


@dataclass
class HaikuGru(JaxBackend):
    family: str = "haiku"
    modules: tuple[str, ...] = ("jax", "haiku")
    library: tuple[str, ...] = ("dm-haiku",)
    form: Form = RESET_BEFORE_MATMUL  # hk.GRU's only form

    def converter(self) -> ModuleType:
        return conv

    def convert(self, tensors: dict[str, np.ndarray]) -> Any:
        return conv.torch_to_haiku(tensors)

    def supports(self, case: Case) -> str | None:
        return NO_LENGTHS if case.packed else None

    def library_notes(self) -> dict[str, Any]:
        import haiku

        return {
            "haiku": haiku.__version__,
            "modules": "hk.GRU per layer and direction, hk.dynamic_unroll (reverse=True for backward), in hk.transform",
            "form": "reset before the recurrent matmul, h' = (1 - z) h + z a: update gate negated, biases folded",
            "variable_lengths": "none: " + NO_LENGTHS,
        }

    def describe(self) -> dict[str, Any]:
        return super().describe() | {
            "cannot_represent": [
                "the split of each gate's bias between bias_ih and bias_hh (only sums)",
                "PyTorch's form (b_hn inside r * (W_hn h + b_hn))",
            ]
        }

    def build_program(self, case: Case) -> Any:
        import haiku as hk

        directions = case.num_directions

        def forward(x: Any, h0: Any) -> tuple[Any, Any]:
            import jax.numpy as jnp

            xs = x if not case.batch_first else jnp.swapaxes(x, 0, 1)
            h_n = []
            for layer in range(case.num_layers):
                outs = []
                for direction in range(directions):
                    core = hk.GRU(case.hidden_size, name=conv.module_name(layer, direction))
                    index = layer * directions + direction
                    state = core.initial_state(xs.shape[1]).astype(xs.dtype) if h0 is None else h0[index]
                    ys, last = hk.dynamic_unroll(core, xs, state, time_major=True, reverse=bool(direction))
                    outs.append(ys)
                    h_n.append(last)
                xs = outs[0] if directions == 1 else jnp.concatenate(outs, axis=-1)
            return (xs if not case.batch_first else jnp.swapaxes(xs, 0, 1)), jnp.stack(h_n)

        model: Any = hk.without_apply_rng(hk.transform(forward))

        def program(params: Any, x: Any, h0: Any, seq_lengths: Any) -> tuple[Any, Any]:
            return model.apply(params, x, h0)  # type: ignore[no-any-return]

        return self.jit(program)


def backends() -> Iterator[HaikuGru]:
    """haiku[cpu] always (possibly unavailable), haiku[cuda] when jax sees a GPU."""
    yield HaikuGru(device="cpu")
    if gpu_seen():
        yield HaikuGru(device="cuda")
