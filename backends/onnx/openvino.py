"""OpenVINO as a runtime: its CPU plugin, in strict precision or as it comes out of the box.

Precision. OpenVINO's CPU plugin chooses an *inference precision* for floating-point
models: bfloat16 on CPUs with AVX512-BF16 or AMX, float32 elsewhere (float16 on some ARM
cores). Strict mode asks for float32 (`INFERENCE_PRECISION_HINT=f32`, its documented
switch); default mode sets nothing. What a compiled model really runs in is read, never
assumed: every compiled model's execution graph (`get_runtime_model()`) records each
node's `runtimePrecision`, and the narrowest floating-point one is the format the model
computes in. A probe (one GRUSequence per dtype, compiled with the column's settings)
states that format before anything runs (`compute_format`, for the tolerance and the
report), and every real model is checked against it: a model that ran in another format
is an error, never a tolerance derived for the wrong format.

Weights are bound as initializers (constants), the deployed form, as ort's default:
OpenVINO constant-folds the gate layout and lets the plugin pick the GRU kernel, so one
model is compiled per (model, weights). Models are compiled as read, with their dynamic
batch and seq_len (a user's `core.read_model` then `compile_model`).

bfloat16 through the Python API (openvinotoolkit/openvino#35284): OpenVINO returns bf16
tensors as float16 arrays holding bfloat16 bits (numpy has no bfloat16), and an
`ml_dtypes.bfloat16` array fed to `infer` is silently misread (0.0408 arrives as 4.1e-14).
So bf16 inputs go in as `ov.Tensor(ov.Type.bf16)` filled with their bits, and outputs are
read by their element type: the cell checks OpenVINO's GRU, not the binding's dtype map.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import lru_cache, partial
from typing import Any

import numpy as np

from backends.onnx.model_source import Prepared
from backends.onnx.ort import bind_initializers
from backends.onnx.runtime import OUTPUTS, Runtime
from conformance.contract import UnsupportedCase
from conformance.dtypes import FORMATS, fmt, name_of

DEVICE = "CPU"  # OpenVINO's name for the plugin; its GPU plugin is Intel-only and not run here
STRICT_PROPERTIES = {"INFERENCE_PRECISION_HINT": "f32"}
# OpenVINO element types (as `runtimePrecision` spells them) -> the suite's format names
OV_FORMATS = {"f64": "float64", "f32": "float32", "f16": "float16", "bf16": "bfloat16"}
SHAPE_ONLY_LAYERS = {"Input", "Output", "Const"}  # they store values but compute nothing


def executed_formats(compiled: Any) -> dict[str, str]:
    """Every computing node of a compiled model's execution graph -> the format it runs in."""
    formats: dict[str, str] = {}
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if info["layerType"].astype(str) in SHAPE_ONLY_LAYERS:
            continue
        precision = info["runtimePrecision"].astype(str)
        if precision in OV_FORMATS:
            formats[f"{op.get_friendly_name()} ({info['layerType'].astype(str)})"] = OV_FORMATS[precision]
    return formats


def narrowest(formats: dict[str, str]) -> str | None:
    """The format with the fewest mantissa bits: where a model's rounding error comes from."""
    names = set(formats.values())
    return min(names, key=lambda name: FORMATS[name].mantissa_bits) if names else None


def ov_element_type(dtype: str) -> Any:
    import openvino as ov

    return {"float64": ov.Type.f64, "float32": ov.Type.f32, "float16": ov.Type.f16, "bfloat16": ov.Type.bf16}[dtype]


@lru_cache(maxsize=32)
def probe_format(properties: tuple[tuple[str, str], ...], dtype: str) -> str | None:
    """The format OpenVINO's CPU plugin runs a `dtype` GRUSequence in when compiled with `properties`.

    A one-step GRU built with OpenVINO's own opset (no ONNX, no source), compiled with the
    column's properties; its execution graph says what the plugin chose on this CPU.
    """
    import openvino as ov
    import openvino.opset15 as ops

    element = ov_element_type(dtype)
    x = ops.parameter([1, 1, 2], element, name="x")
    h0 = ops.parameter([1, 1, 2], element, name="h0")
    weight = np.zeros((1, 6, 2), dtype=fmt(dtype).numpy)
    gru = ops.gru_sequence(
        x,
        h0,
        ops.constant(np.array([1], dtype=np.int32)),
        ops.constant(weight, element),
        ops.constant(weight, element),
        ops.constant(np.zeros((1, 8), dtype=fmt(dtype).numpy), element),
        hidden_size=2,
        direction="forward",
        linear_before_reset=True,
    )
    compiled = ov.Core().compile_model(ov.Model(gru.outputs(), [x, h0]), DEVICE, dict(properties))
    return narrowest(executed_formats(compiled))


def quote(error: BaseException) -> str:
    """OpenVINO's most specific line: its errors nest `Exception from <file>:<line>:` frames first."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    specific = [ln for ln in lines if not ln.startswith("Exception from ")]
    return (specific or lines or [type(error).__name__])[-1]


def to_tensor(array: np.ndarray) -> Any:
    """A numpy input as OpenVINO takes it: bfloat16 as a bf16 tensor holding the same bits."""
    import openvino as ov

    if array.dtype != fmt("bfloat16").numpy:
        return array
    tensor = ov.Tensor(ov.Type.bf16, list(array.shape))
    tensor.data.view(np.uint16)[...] = np.ascontiguousarray(array).view(np.uint16)
    return tensor


def from_tensor(tensor: Any) -> np.ndarray:
    """An output tensor as numpy in its own element type (bf16 bits come back typed float16)."""
    import openvino as ov

    data = np.array(tensor.data, copy=True)
    if tensor.element_type == ov.Type.bf16:
        return data.view(np.uint16).view(fmt("bfloat16").numpy)
    return data


class OpenVinoRunner:
    """One compiled model per (model, weights); each one's executed format must be the one the runtime states."""

    def __init__(self, properties: dict[str, str], stated: Callable[[str], str | None]) -> None:
        self.properties = properties
        self.stated = stated  # dtype -> the format the column states it computes in
        self.compiled = 0
        self.compile_s = 0.0

    def _compile(self, prepared: Prepared, dtype: str) -> Any:
        import openvino as ov

        core = ov.Core()
        started = time.perf_counter()
        try:
            model = core.read_model(bind_initializers(prepared.model, prepared.weight_feeds), b"")
            compiled = core.compile_model(model, DEVICE, self.properties)
        except RuntimeError as error:  # the ONNX frontend or the plugin refusing the model
            raise UnsupportedCase(f"OpenVINO compile: {type(error).__name__}: {quote(error)}") from error
        self.compile_s += time.perf_counter() - started
        self.compiled += 1
        stated, ran = self.stated(dtype), narrowest(executed_formats(compiled))
        if ran != stated:
            raise RuntimeError(
                f"OpenVINO ran this {dtype} model in {ran}, but the column states {stated}: "
                "its tolerance would be derived for the wrong format"
            )
        return compiled

    def run(self, prepared: Prepared, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        compiled = self._compile(prepared, name_of(feeds["x"].dtype))
        request = compiled.create_infer_request()
        try:
            request.infer({name: to_tensor(value) for name, value in feeds.items()})
        except RuntimeError as error:  # a shape check failing inside the plugin: a crash, not a refusal
            raise RuntimeError(f"OpenVINO infer: {quote(error)}") from error
        return [from_tensor(request.get_tensor(name)) for name in OUTPUTS]


class OpenVinoRuntime(Runtime):
    name = "openvino"
    modules = ("openvino",)

    def properties(self, precision: str) -> dict[str, str]:
        """The compile properties of a precision mode: strict asks for f32, default leaves the plugin's choice."""
        return dict(STRICT_PROPERTIES) if precision == "strict" else {}

    def compute_format(self, device: str, precision: str, dtype: str) -> str | None:
        """What the plugin runs a `dtype` GRU in with this mode's properties, read from a probe's execution graph."""
        return probe_format(tuple(sorted(self.properties(precision).items())), dtype)

    def describe(self, device: str, precision: str) -> dict[str, Any]:
        import openvino as ov

        core = ov.Core()
        return {
            "openvino": ov.__version__,
            "device": f"{DEVICE} ({core.get_property(DEVICE, 'FULL_DEVICE_NAME')})",
            "cpu_capabilities": list(core.get_property(DEVICE, "OPTIMIZATION_CAPABILITIES")),
            "weights": "initializers",
            "shapes": "dynamic batch and seq_len, as read",
            "precision": {
                "mode": precision,
                "compile_properties": self.properties(precision) or "none (the plugin's defaults)",
                "plugin_default_inference_precision": core.get_property(DEVICE, "INFERENCE_PRECISION_HINT").to_string(),
                # what a GRUSequence of each dtype really runs in, read from its execution graph
                "computes_in": {dtype: self.compute_format(device, precision, dtype) for dtype in FORMATS},
            },
        }

    def runner(self, device: str, precision: str) -> OpenVinoRunner:
        return OpenVinoRunner(self.properties(precision), partial(self.compute_format, device, precision))


OPENVINO = OpenVinoRuntime()
