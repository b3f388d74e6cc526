"""Keras 3 on the JAX backend: `layers.GRU(reset_after=True)` and `layers.Bidirectional`.

Keras picks its backend once, at first import, from `KERAS_BACKEND`. This adapter sets
`KERAS_BACKEND=jax` just before it imports keras (`_import_keras`); if keras was already
imported in this process with another backend, the adapter is unavailable and says so
(set `KERAS_BACKEND=jax` in the environment to run it next to other keras users).

One Keras layer per PyTorch layer, `return_sequences=True, return_state=True`, built once
per structure and run with `layer.stateless_call` inside one `jax.jit` (Keras's documented
way to use a layer as a pure JAX function), with the converted weights as arguments.
Variable lengths go in as Keras's `mask` (True = valid step); h0 as `initial_state`.
Keras has no time-major option: time-major cases are transposed around the call.
Weights come from `backends.converters.keras_gru` (gate order z, r, h; exact).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from backends.converters import keras_gru as conv
from backends.jax_common import (
    INSTALL_HINT,
    JaxBackend,
    gpu_seen,
)
from conformance.case import Case
from conformance.contract import Availability, first_line

_HOST_ZEROS: Any = None


def _import_keras() -> Any:
    """keras, imported on the JAX backend; raises RuntimeError if another backend got there first."""
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "jax"  # read once, at keras's first import
    import keras

    if keras.backend.backend() != "jax":
        raise RuntimeError(
            f"keras was already imported with backend {keras.backend.backend()!r}; "
            "set KERAS_BACKEND=jax before anything imports keras"
        )
    return keras


def _host_zeros() -> Any:
    """A Keras initializer returning numpy zeros: building a layer then computes no random init."""
    global _HOST_ZEROS
    if _HOST_ZEROS is None:
        keras = _import_keras()
        initializer: Any = keras.initializers.Initializer  # keras is imported lazily, so mypy sees Any

        @keras.saving.register_keras_serializable(package="gru_conformance")
        class HostZeros(initializer):
            def __call__(self, shape: Any, dtype: Any = None) -> np.ndarray:
                return np.zeros(shape, dtype=keras.backend.standardize_dtype(dtype))

        _HOST_ZEROS = HostZeros
    return _HOST_ZEROS()


@dataclass
class KerasJaxGru(JaxBackend):
    family: str = "keras-jax"
    modules: tuple[str, ...] = ("jax",)
    library: tuple[str, ...] = ("keras",)

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
        return conv.torch_to_keras(tensors)

    def library_notes(self) -> dict[str, Any]:
        keras = _import_keras()
        return {
            "keras": keras.__version__,
            "keras_backend": keras.backend.backend(),
            "modules": "keras.layers.GRU(reset_after=True) / keras.layers.Bidirectional, one per layer",
            "variable_lengths": "mask=(B,T) valid steps; padded outputs: Keras repeats the previous output",
            "layout": "Keras is batch-major only: time-major cases are transposed around the call",
        }

    def build_program(self, case: Case) -> Any:
        keras = _import_keras()
        layers, non_trainable = [], []
        directions = case.num_directions
        for layer in range(case.num_layers):
            width = case.input_size if layer == 0 else case.hidden_size * directions
            gru = keras.layers.GRU(
                case.hidden_size,
                return_sequences=True,
                return_state=True,
                reset_after=True,
                use_bias=case.bias,
                dtype=case.dtype,
                kernel_initializer=_host_zeros(),
                recurrent_initializer=_host_zeros(),
                bias_initializer=_host_zeros(),
            )
            module = (
                keras.layers.Bidirectional(gru, merge_mode="concat", dtype=case.dtype) if case.bidirectional else gru
            )
            module.build((None, None, width))
            layers.append(module)
            non_trainable.append([np.asarray(v.value) for v in module.non_trainable_variables])

        def program(weights: Any, x: Any, h0: Any, seq_lengths: Any) -> tuple[Any, Any]:
            import jax.numpy as jnp

            seq = x if case.batch_first else jnp.swapaxes(x, 0, 1)
            steps = seq.shape[1]
            mask = None if seq_lengths is None else jnp.arange(steps)[None, :] < seq_lengths[:, None]
            h_n = []
            for index, module in enumerate(layers):
                init = None if h0 is None else [h0[index * directions + d] for d in range(directions)]
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
