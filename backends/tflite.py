"""TFLite: the Keras GRU converted with TensorFlow's converter and run in LiteRT's interpreter.

This is where a Keras GRU goes for mobile. Per case, the `keras-tensorflow` model of
`backends.keras_common` (same layers, mask, h0 and layout) is traced as one `tf.function`
around each layer's `stateless_call`, with the case's converted weights as constants, so the
converter bakes them into the flatbuffer as a deployed model has them; that function goes
through `tf.lite.TFLiteConverter.from_concrete_functions` and the flatbuffer runs in
`ai_edge_litert.interpreter.Interpreter` (LiteRT's; TensorFlow 2.21 still ships
`tf.lite.Interpreter`, deprecated in its favour, with the same kernels). Two columns, one
per converter setting:

    tflite/builtins   TFLiteConverter's defaults: TFLite built-in ops only, TensorList ops lowered
    tflite/tf-ops     built-ins plus SELECT_TF_OPS with TensorList ops kept as TensorFlow ops,
                      the settings the converter itself recommends when lowering fails (Keras 3's
                      own `model.export(format="litert")` also adds SELECT_TF_OPS)

Shapes: the converter needs static shapes to lower the GRU's loop, so a case is converted at
its trace shape (`Case.export_dims`: the run shape for `xsame`, batch 4 and seq_len 7 for
`xother`, batch 1 and seq_len 1 for `xdegenerate`) and the interpreter's signature runner
resizes the inputs to the run shape, as a deployed model fed another shape has them resized. A converter
refusal, or an interpreter that can't prepare the model, is `unsupported`, quoting the library.
Runs in a worker process (`OutOfProcess`): TensorFlow must not share the suite's process with
Keras on JAX.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backends import keras_common
from backends.converters import keras_gru as conv
from backends.flatbuffer_store import FlatbufferStore, model_key
from conformance.case import Case
from conformance.contract import (
    Availability,
    BaseBackend,
    UnsupportedCase,
    WorkerSpec,
    column,
    first_line,
    smallest_case_runs,
)
from conformance.data import GruOutput, Inputs, Weights

INSTALL_HINT = "pip install -e '.[tensorflow]' -c constraints.txt"
CONVERSIONS = {
    "builtins": "TFLiteConverter defaults: supported_ops=[TFLITE_BUILTINS], TensorList ops lowered",
    "tf-ops": "supported_ops=[TFLITE_BUILTINS, SELECT_TF_OPS], _experimental_lower_tensor_list_ops=False",
}
# What the interpreter says when it can't prepare a model: a refusal, not a wrong answer.
REFUSALS = ("failed to prepare", "not supported", "unsupported")


def converter_message(error: BaseException) -> str:
    """The converter's own sentence: what it says about unsupported ops (with the first op it lists, which
    shows the dtype), else its last `error:` line that isn't an MLIR location, else the first line."""
    lines = [line.strip() for line in str(error).splitlines()]
    unsupported = next((line for line in lines if line.startswith("Some ops are not supported")), None)
    if unsupported:
        listed = next((line.split(" : ")[0] for line in lines if line.startswith("tf.") and "(tensor<" in line), "")
        return f"{type(error).__name__}: {unsupported}" + (f" (first listed: {listed})" if listed else "")
    said = [line.split("error: ", 1)[1] for line in lines if "error: " in line]
    plain = [line for line in said if not line.startswith("loc(")]
    if plain:
        return f"{type(error).__name__}: {plain[-1]}"
    return first_line(error)


@dataclass
class TfliteGru(BaseBackend):
    family: str = "tflite"
    conversion: str = "builtins"
    _layers: dict[tuple[Any, ...], list[Any]] = field(default_factory=dict, repr=False)
    facts: dict[str, Any] = field(default_factory=lambda: {"conversions": 0, "convert_s": 0.0}, repr=False)
    _whole: Availability | None = field(default=None, repr=False)  # does LiteRT run this conversion at all?
    store_root: Path | None = None  # default `<cache>/tflite`

    @property
    def store(self) -> FlatbufferStore:
        return FlatbufferStore(self.store_root)

    @property
    def name(self) -> str:
        return f"{self.family}/{self.conversion}[{column(self.device, self.precision)}]"

    def worker_spec(self) -> WorkerSpec:
        return WorkerSpec(
            factory="backends.tflite:backends",
            group=self.family,
            env={"KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "1"},
        )

    def availability(self) -> Availability:
        try:
            importlib.import_module("tensorflow")
            importlib.import_module("ai_edge_litert.interpreter")
            keras_common.import_keras("tensorflow")
        except ImportError as error:
            return Availability(
                False, f"tensorflow, ai-edge-litert or keras is not importable: {first_line(error)}", INSTALL_HINT
            )
        except RuntimeError as error:
            return Availability(False, str(error))
        if self._whole is None:  # once per worker: convert and run the smallest case for real
            self._whole = smallest_case_runs(self.run)
        return self._whole

    def supports(self, case: Case) -> str | None:
        lost = conv.cannot_represent(case.bias)
        return "; ".join(lost) if lost else None

    def describe(self) -> dict[str, Any]:
        from importlib.metadata import version

        import tensorflow as tf

        keras = keras_common.import_keras("tensorflow")
        return {
            "tensorflow": tf.__version__,
            "ai_edge_litert": version("ai-edge-litert"),
            "keras": keras.__version__,
            "model": "the keras-tensorflow layers (keras_common), traced as one tf.function of stateless_call with "
            "the case's weights as constants (baked into the flatbuffer)",
            "converter": f"tf.lite.TFLiteConverter.from_concrete_functions; {CONVERSIONS[self.conversion]}",
            "interpreter": "ai_edge_litert.interpreter.Interpreter, default op resolver (XNNPACK delegate for "
            "float32), signature runner",
            "shapes": "xsame: converted at the run shape (static); xother: dynamic batch and time, inputs resized "
            "by the signature runner",
            "precision": {"mode": self.precision, "note": "TFLite has no TF32; XNNPACK runs float32 in float32"},
            "variable_lengths": "a (B,T) bool mask input passed to each layer as Keras's mask",
            "converted_per_case": "yes: weights are constants, so each case is one conversion, kept in "
            f"{self.store.root} (keyed by the weights, structure, trace shape, versions and adapter sources)",
        }

    def layers(self, case: Case) -> list[Any]:
        if case.structure not in self._layers:
            self._layers[case.structure] = keras_common.build_layers(keras_common.import_keras("tensorflow"), case)
        return self._layers[case.structure]

    def flatbuffer(self, case: Case, weights: Weights) -> bytes:
        """The case's model, weights baked in, as the converter writes it; UnsupportedCase if it refuses.
        From the store when an earlier run converted the same model (`backends.flatbuffer_store`)."""
        parts = {"conversion": self.conversion, "structure": case.structure, "trace": case.export_dims}
        key = model_key(parts, weights.tensors)
        stored = self.store.load(self.conversion, key)
        if stored is None:
            try:
                stored = self.convert(case, weights)
            except UnsupportedCase as refusal:
                stored = str(refusal)
            self.store.save(self.conversion, key, stored)
        else:
            self.facts["loaded"] = self.facts.get("loaded", 0) + 1
        if isinstance(stored, str):
            raise UnsupportedCase(stored)
        return stored

    def convert(self, case: Case, weights: Weights) -> bytes:
        """Trace the layers with the weights as constants and convert; UnsupportedCase quoting the converter."""
        import time

        import tensorflow as tf

        layers = self.layers(case)
        constants = []
        for module, layer_weights in zip(layers, conv.torch_to_keras(weights.tensors), strict=True):
            module.set_weights(layer_weights)
            constants.append(
                (
                    [tf.constant(v.value) for v in module.trainable_variables],
                    [tf.constant(v.value) for v in module.non_trainable_variables],
                )
            )
        batch, steps = case.export_dims  # the trace shape: the run shape for `xsame`, else (4, 7) or (1, 1)
        directions = case.num_directions
        specs = {"x": tf.TensorSpec((batch, steps, case.input_size), case.dtype, name="x")}
        if case.lengths != "dense":
            specs["mask"] = tf.TensorSpec((batch, steps), tf.bool, name="mask")
        if case.initial_state:
            specs["h0"] = tf.TensorSpec((case.num_layers * directions, batch, case.hidden_size), case.dtype, name="h0")

        def gru(x: Any, mask: Any = None, h0: Any = None) -> dict[str, Any]:
            seq, h_n = x, []
            for index, module in enumerate(layers):
                init = keras_common.initial_state(h0, index, directions)
                outputs, _ = module.stateless_call(*constants[index], seq, initial_state=init, mask=mask)
                seq = outputs[0]
                h_n += list(outputs[1:])
            return {"output": seq, "h_n": tf.stack(h_n)}

        traced = tf.function(gru).get_concrete_function(**specs)
        converter = tf.lite.TFLiteConverter.from_concrete_functions([traced], layers[0])
        if self.conversion == "tf-ops":
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
            converter._experimental_lower_tensor_list_ops = False
        started = time.perf_counter()
        try:
            model: bytes = converter.convert()
        except Exception as error:
            raise UnsupportedCase(f"the TFLite converter refuses: {converter_message(error)}") from None
        finally:
            self.facts["conversions"] += 1
            self.facts["convert_s"] += time.perf_counter() - started
        return model

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        from ai_edge_litert.interpreter import Interpreter

        model = self.flatbuffer(case, weights)
        feeds: dict[str, np.ndarray] = {"x": inputs.x if case.batch_first else np.swapaxes(inputs.x, 0, 1)}
        mask = keras_common.valid_steps(inputs.lengths, case.seq_len)
        if mask is not None:
            feeds["mask"] = mask
        if inputs.h0 is not None:
            feeds["h0"] = inputs.h0
        try:
            runner = Interpreter(model_content=model).get_signature_runner()
            result = runner(**feeds)
        except (RuntimeError, ValueError) as error:
            if any(word in str(error) for word in REFUSALS):
                raise UnsupportedCase(f"the LiteRT interpreter refuses: {first_line(error)}") from None
            raise
        output = result["output"]
        return GruOutput(output=output if case.batch_first else np.swapaxes(output, 0, 1), h_n=result["h_n"])


def backends() -> Iterator[TfliteGru]:
    """tflite/builtins[cpu] and tflite/tf-ops[cpu] (TFLite's Python interpreter runs on the CPU)."""
    for conversion in CONVERSIONS:
        yield TfliteGru(conversion=conversion)
