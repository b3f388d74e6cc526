"""Keras 3 on TensorFlow (`keras-tensorflow`) and on PyTorch (`keras-torch`), each in a worker process.

Keras picks its backend once per process, and the suite's process runs Keras on JAX
(`backends.keras_jax`). So these adapters declare `OutOfProcess`: each family gets a long-lived
worker process with `KERAS_BACKEND` set in its environment before anything is imported, and
the suite's process only ever sees their names.

In the worker, the adapter runs the layers of `backends.keras_common` (the same model
`keras-jax` runs: one `layers.GRU(reset_after=True)` or `Bidirectional` per PyTorch layer, mask
for lengths, h0 as initial_state) eagerly, as a user calling the model does: built once per
structure, the case's weights loaded with `set_weights` (from the exact converter
`backends.converters.keras_gru`), inputs given as the backend's tensors in the case dtype.
On CPU, Keras on TensorFlow runs the generic `keras.src.backend.tensorflow.rnn.rnn` loop (the
cuDNN GRU is for GPUs only); on PyTorch, Keras's own step loop (`keras.src.backend.torch.rnn`).

CPU only: tensorflow-cpu has no GPU build, and Keras on PyTorch picks its device globally.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backends import keras_common
from backends.converters import keras_gru as conv
from conformance.case import Case
from conformance.contract import Availability, BaseBackend, WorkerSpec, first_line
from conformance.data import GruOutput, Inputs, Weights

INSTALL_HINTS = {
    "tensorflow": "pip install -e '.[tensorflow]' -c constraints.txt",
    "torch": "pip install -e '.[torch,jax]' -c constraints.txt",
}
# Set in the worker before anything is imported: the Keras backend, and TensorFlow's C++ logging
# kept to warnings and errors (its info lines would fill a crash reason's stderr tail).
WORKER_ENV = {
    "tensorflow": {"KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "1"},
    "torch": {"KERAS_BACKEND": "torch"},
}


@dataclass
class KerasNativeGru(BaseBackend):
    """Keras on `keras_backend` ("tensorflow" or "torch"), run eagerly in its own worker process."""

    family: str = "keras-tensorflow"
    keras_backend: str = "tensorflow"
    _layers: dict[tuple[Any, ...], list[Any]] = field(default_factory=dict, repr=False)

    def worker_spec(self) -> WorkerSpec:
        return WorkerSpec(
            factory=f"backends.keras_native:{self.keras_backend}_backends",
            group=self.family,
            env=WORKER_ENV[self.keras_backend],
        )

    def keras(self) -> Any:
        return keras_common.import_keras(self.keras_backend)

    def availability(self) -> Availability:
        hint = INSTALL_HINTS[self.keras_backend]
        try:
            importlib.import_module(self.keras_backend)
            self.keras()
        except ImportError as error:
            return Availability(False, f"{self.keras_backend} or keras is not importable: {first_line(error)}", hint)
        except RuntimeError as error:
            return Availability(False, str(error))
        return Availability.ok()

    def supports(self, case: Case) -> str | None:
        lost = conv.cannot_represent(case.bias)
        return "; ".join(lost) if lost else None

    def describe(self) -> dict[str, Any]:
        return {
            **self.library_notes(),
            **keras_common.notes(self.keras()),
            "execution": "eager layer calls (no tf.function / torch.compile), CPU",
            "folds": conv.FOLDS,
            "cannot_represent": conv.cannot_represent(True),
        }

    def library_notes(self) -> dict[str, Any]:
        """The backend library's version and the settings that decide float32 matmul precision."""
        if self.keras_backend == "tensorflow":
            import tensorflow as tf

            self.apply_precision()
            return {
                "tensorflow": tf.__version__,
                "precision": {
                    "mode": self.precision,
                    "tensor_float_32_execution": tf.config.experimental.tensor_float_32_execution_enabled(),
                    "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset (oneDNN on by default)"),
                },
            }
        import torch

        self.apply_precision()
        return {
            "torch": torch.__version__,
            "precision": {"mode": self.precision, "float32_matmul_precision": torch.get_float32_matmul_precision()},
        }

    def apply_precision(self) -> None:
        """Strict mode: the highest float32 matmul precision (no TF32, no bfloat16 passes). Process-wide,
        which is safe here: the worker process runs this backend family in this one mode only."""
        if self.precision != "strict":
            return
        if self.keras_backend == "tensorflow":
            import tensorflow as tf

            tf.config.experimental.enable_tensor_float_32_execution(False)
        else:
            import torch

            torch.set_float32_matmul_precision("highest")

    def layers(self, case: Case) -> list[Any]:
        key = case.structure
        if key not in self._layers:
            self._layers[key] = keras_common.build_layers(self.keras(), case)
        return self._layers[key]

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        keras = self.keras()
        self.apply_precision()
        layers = self.layers(case)
        for module, layer_weights in zip(layers, conv.torch_to_keras(weights.tensors), strict=True):
            module.set_weights(layer_weights)

        def tensor(array: np.ndarray | None) -> Any:
            return None if array is None else keras.ops.convert_to_tensor(array, dtype=case.dtype)

        x = inputs.x if case.batch_first else np.swapaxes(inputs.x, 0, 1)
        mask = keras_common.valid_steps(inputs.lengths, x.shape[1])
        seq, h0 = tensor(x), tensor(inputs.h0)
        mask_tensor = None if mask is None else keras.ops.convert_to_tensor(mask)
        h_n = []
        for index, module in enumerate(layers):
            init = keras_common.initial_state(h0, index, case.num_directions)
            outputs = module(seq, initial_state=init, mask=mask_tensor)
            seq = outputs[0]
            h_n += [keras.ops.convert_to_numpy(state) for state in outputs[1:]]
        output = keras.ops.convert_to_numpy(seq)
        return GruOutput(output=output if case.batch_first else np.swapaxes(output, 0, 1), h_n=np.stack(h_n))


def tensorflow_backends() -> Iterator[KerasNativeGru]:
    yield KerasNativeGru(family="keras-tensorflow", keras_backend="tensorflow")


def torch_backends() -> Iterator[KerasNativeGru]:
    yield KerasNativeGru(family="keras-torch", keras_backend="torch")
