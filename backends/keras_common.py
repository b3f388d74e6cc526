"""What every Keras 3 adapter shares, whichever backend Keras runs on (JAX, TensorFlow, PyTorch).

Keras reads `KERAS_BACKEND` once, at its first import in a process, and keeps that backend for
the life of the process. `import_keras(backend)` sets it just before that first import and
refuses (RuntimeError) when keras already runs on another one: Keras on TensorFlow or PyTorch
therefore runs in a worker process of its own (`conformance.out_of_process`), while Keras on
JAX runs in the suite's process.

The model is built as a Keras user builds it: one `layers.GRU(reset_after=True)` per PyTorch
layer, wrapped in `layers.Bidirectional(merge_mode="concat")` for a bidirectional case, with
`return_sequences=True, return_state=True`; weights come from `backends.converters.keras_gru`
(exact; gate order z, r, h). Variable lengths go in as Keras's `mask` (True = valid step), h0
as `initial_state`. Keras has no time-major option: time-major cases are transposed around the
call. Keras's default `zero_output_for_mask=False` is kept, because that is what users get: a
unidirectional GRU repeats the last valid output at padded steps (the suite's `convention`),
while `Bidirectional` gives zeros there.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np

from conformance.case import Case

_HOST_ZEROS: dict[str, Any] = {}


def import_keras(backend: str) -> Any:
    """keras, imported on `backend`; raises RuntimeError if keras already runs on another one here."""
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = backend  # read once, at keras's first import
    import keras

    if keras.backend.backend() != backend:
        raise RuntimeError(
            f"keras was already imported with backend {keras.backend.backend()!r}; "
            f"set KERAS_BACKEND={backend} before anything imports keras"
        )
    return keras


def host_zeros(keras: Any) -> Any:
    """A Keras initializer returning numpy zeros: building a layer then computes no random init."""
    backend = keras.backend.backend()
    if backend not in _HOST_ZEROS:
        initializer: Any = keras.initializers.Initializer  # keras is imported lazily, so mypy sees Any

        @keras.saving.register_keras_serializable(package="gru_conformance")
        class HostZeros(initializer):
            def __call__(self, shape: Any, dtype: Any = None) -> np.ndarray:
                return np.zeros(shape, dtype=keras.backend.standardize_dtype(dtype))

        _HOST_ZEROS[backend] = HostZeros
    return _HOST_ZEROS[backend]()


def build_layers(keras: Any, case: Case, reset_after: bool = True) -> list[Any]:
    """One built Keras layer per PyTorch layer (a GRU, or a Bidirectional around one), weights zero.
    `reset_after=False` is Keras's other GRU form (`keras-jax-reset-after-false`)."""
    layers = []
    for layer in range(case.num_layers):
        width = case.input_size if layer == 0 else case.hidden_size * case.num_directions
        gru = keras.layers.GRU(
            case.hidden_size,
            return_sequences=True,
            return_state=True,
            reset_after=reset_after,
            use_bias=case.bias,
            dtype=case.dtype,
            kernel_initializer=host_zeros(keras),
            recurrent_initializer=host_zeros(keras),
            bias_initializer=host_zeros(keras),
        )
        module = keras.layers.Bidirectional(gru, merge_mode="concat", dtype=case.dtype) if case.bidirectional else gru
        module.build((None, None, width))
        layers.append(module)
    return layers


def valid_steps(lengths: np.ndarray | None, steps: int) -> np.ndarray | None:
    """Keras's mask for per-item lengths: (B, T) booleans, True at valid steps; None for a dense batch."""
    if lengths is None:
        return None
    return np.arange(steps)[None, :] < np.asarray(lengths)[:, None]


def initial_state(h0: Any, layer: int, directions: int) -> list[Any] | None:
    """The layer's `initial_state`: [h0 of the forward direction(, of the backward one)]."""
    return None if h0 is None else [h0[layer * directions + d] for d in range(directions)]


def notes(keras: Any, reset_after: bool = True) -> dict[str, Any]:
    """The report lines every Keras adapter shares."""
    return {
        "keras": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "modules": f"keras.layers.GRU(reset_after={reset_after}) / keras.layers.Bidirectional, one per layer",
        "variable_lengths": "mask=(B,T) valid steps; padded outputs: Keras repeats the previous output "
        "(zero_output_for_mask=False, the default) in a unidirectional GRU, zeros in Bidirectional",
        "layout": "Keras is batch-major only: time-major cases are transposed around the call",
    }
