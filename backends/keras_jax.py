"""Keras 3 on the JAX backend: `layers.GRU(reset_after=True)` and `layers.Bidirectional`.

A second family, `keras-jax-reset-after-false`, runs `layers.GRU(reset_after=False)`, Keras's
other GRU (reset before the recurrent matmul); it declares that form and is judged in it.

Keras picks its backend once, at first import, from `KERAS_BACKEND`. This adapter sets
`KERAS_BACKEND=jax` just before it imports keras (`keras_common.import_keras`); if keras was
already imported in this process with another backend, the adapter is unavailable and says so
(set `KERAS_BACKEND=jax` in the environment to run it next to other keras users). Keras on
TensorFlow and on PyTorch run in worker processes of their own (`backends.keras_native`).

The layers are `keras_common.build_layers`' (one per PyTorch layer; mask, h0 and layout as
that module says), built once per structure and run with `layer.stateless_call` inside one
`jax.jit` (Keras's documented way to use a layer as a pure JAX function), with the converted
weights as arguments.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from backends import keras_common
from backends.converters import keras_gru as conv
from backends.jax_common import (
    INSTALL_HINT,
    JaxBackend,
    gpu_seen,
)
from conformance.case import Case
from conformance.contract import Availability, first_line
from conformance.forms import PYTORCH, Form


def _import_keras() -> Any:
    """keras, imported on the JAX backend; raises RuntimeError if another backend got there first."""
    return keras_common.import_keras("jax")


@dataclass
class KerasJaxGru(JaxBackend):
    family: str = "keras-jax"
    modules: tuple[str, ...] = ("jax",)
    library: tuple[str, ...] = ("keras",)
    program_modules: tuple[str, ...] = ("backends.keras_common",)
    reset_after: bool = True  # False: Keras's other GRU (reset before the recurrent matmul), its own column

    @property
    def form(self) -> Form:
        """What Keras documents `reset_after` to mean: True is PyTorch's form, False the other one."""
        return PYTORCH if self.reset_after else Form(linear_before_reset=False)

    def availability(self) -> Availability:
        base = super().availability()
        if not base.available:
            return base
        try:
            _import_keras()
        except ImportError as error:
            return Availability(False, f"keras is not importable: {first_line(error)}", INSTALL_HINT)
        except RuntimeError as error:
            return Availability(False, str(error))
        return Availability.ok()

    def converter(self) -> ModuleType:
        return conv

    def convert(self, tensors: dict[str, np.ndarray]) -> Any:
        return conv.torch_to_keras(tensors, self.reset_after)

    def describe(self) -> dict[str, Any]:
        notes = super().describe()
        if not self.reset_after:  # the (3H,) bias folds every recurrent bias into the input one
            notes["folds"] = conv.RESET_BEFORE_FOLDS
            notes["cannot_represent"] = ["the split of each gate's bias between bias_ih and bias_hh (only sums)"]
        return notes

    def convert_gradients(self, grads: Any, case: Case) -> dict[str, np.ndarray]:
        return conv.keras_gradients_to_torch(grads, case.bidirectional, bias=case.bias)

    def library_notes(self) -> dict[str, Any]:
        return keras_common.notes(_import_keras(), self.reset_after)

    def build_program(self, case: Case) -> Any:
        layers = keras_common.build_layers(_import_keras(), case, self.reset_after)
        non_trainable = [[np.asarray(v.value) for v in module.non_trainable_variables] for module in layers]
        directions = case.num_directions

        def program(weights: Any, x: Any, h0: Any, seq_lengths: Any) -> tuple[Any, Any]:
            import jax.numpy as jnp

            seq = x if case.batch_first else jnp.swapaxes(x, 0, 1)
            steps = seq.shape[1]
            mask = None if seq_lengths is None else jnp.arange(steps)[None, :] < seq_lengths[:, None]
            h_n = []
            for index, module in enumerate(layers):
                init = keras_common.initial_state(h0, index, directions)
                outputs, _ = module.stateless_call(
                    weights[index], non_trainable[index], seq, initial_state=init, mask=mask
                )
                seq, states = outputs[0], outputs[1:]
                h_n += list(states)
            output = seq if case.batch_first else jnp.swapaxes(seq, 0, 1)
            return output, jnp.stack(h_n)

        return self.jit(program)


def backends() -> Iterator[KerasJaxGru]:
    """keras-jax[cpu] always (possibly unavailable), keras-jax[cuda] when jax sees a GPU."""
    yield KerasJaxGru(device="cpu")
    if gpu_seen():
        yield KerasJaxGru(device="cuda")


def reset_before_backends() -> Iterator[KerasJaxGru]:
    """keras-jax-reset-after-false[cpu] (and [cuda]): `layers.GRU(reset_after=False)`, judged in its own form."""
    family = "keras-jax-reset-after-false"
    yield KerasJaxGru(family=family, device="cpu", reset_after=False)
    if gpu_seen():
        yield KerasJaxGru(family=family, device="cuda", reset_after=False)
