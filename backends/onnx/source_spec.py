"""A GRU built straight from the ONNX spec with `onnx.helper`, no torch involved.

It runs in the same runtimes as the exported models, so when an exported column
fails and this one passes, the exporter is at fault; when both fail, the runtime.

The graph takes the ONNX-layout weights W, R, B of each layer as inputs; the gate
reordering from torch's (r, z, n) to ONNX's (z, r, h) happens in `spec_weights`,
in NumPy. One model per structure therefore serves every weight set.
Multi-layer is a chain of GRU nodes; a bidirectional layer's Y (T, 2, B, H) is
transposed and reshaped to torch's (T, B, 2H) before feeding the next layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backends.onnx.model_source import ModelSource, Prepared
from conformance.case import Case
from conformance.contract import UnsupportedCase, first_line
from conformance.data import Weights

SPEC_OPSET = 22  # GRU-22 is the first version whose type constraint admits bfloat16
TORCH_GATES = "rzn"  # torch's row blocks in weight_ih / weight_hh / biases


@dataclass(frozen=True)
class SpecOptions:
    """Knobs of the builder. The defaults are correct; the others plant exporter-style bugs in tests."""

    gate_order: str = "zrn"  # ONNX wants z, r, h(=n); "rzn" forgets to reorder
    linear_before_reset: int = 1  # torch semantics; 0 is the ONNX default, a classic exporter slip
    # ONNX attributes beyond torch's (sources that declare them: source_spec_lbr0, source_spec_activations).
    activations: tuple[str, ...] = ()  # (f, g) per direction; () leaves the attribute out (Sigmoid, Tanh)
    activation_alpha: tuple[float, ...] = ()
    activation_beta: tuple[float, ...] = ()
    clip: float | None = None

    @property
    def tag(self) -> str:
        if self == SpecOptions():
            return ""
        extra = f",act={self.activations},a={self.activation_alpha},b={self.activation_beta},clip={self.clip}"
        return f"+gates={self.gate_order},lbr={self.linear_before_reset}" + extra

    def attributes(self, directions: int) -> dict[str, Any]:
        """The GRU node's optional attributes; activations and their parameters repeat per direction."""
        found: dict[str, Any] = {}
        if self.activations:
            found["activations"] = list(self.activations) * directions
        if self.activation_alpha:
            found["activation_alpha"] = list(self.activation_alpha) * directions
        if self.activation_beta:
            found["activation_beta"] = list(self.activation_beta) * directions
        if self.clip is not None:
            found["clip"] = self.clip
        return found


def _reorder(rows: np.ndarray, order: str) -> np.ndarray:
    """Stack torch's three gate blocks (r, z, n) in `order`."""
    blocks = dict(zip(TORCH_GATES, np.split(np.asarray(rows), 3, axis=0), strict=True))
    return np.concatenate([blocks[g] for g in order], axis=0)


def spec_weights(case: Case, weights: Weights, options: SpecOptions = SpecOptions()) -> dict[str, np.ndarray]:
    """Canonical torch weights -> the GRU inputs W_l, R_l, B_l of every layer, in the case dtype."""
    feeds: dict[str, np.ndarray] = {}
    for layer in range(case.num_layers):
        cells = [weights.cell(layer, d) for d in range(case.num_directions)]
        feeds[f"W_l{layer}"] = np.stack([_reorder(c[0], options.gate_order) for c in cells])
        feeds[f"R_l{layer}"] = np.stack([_reorder(c[1], options.gate_order) for c in cells])
        if case.bias:
            biases = []
            for direction, (_, _, bias_ih, bias_hh) in enumerate(cells):
                if bias_ih is None or bias_hh is None:
                    raise ValueError(f"case {case.id}: bias=True but layer {layer} direction {direction} has no biases")
                biases.append(
                    np.concatenate([_reorder(bias_ih, options.gate_order), _reorder(bias_hh, options.gate_order)])
                )
            feeds[f"B_l{layer}"] = np.stack(biases)
    return feeds


def onnx_elem_type(dtype: str) -> int:
    from onnx import TensorProto

    return {
        "float32": TensorProto.FLOAT,
        "float64": TensorProto.DOUBLE,
        "float16": TensorProto.FLOAT16,
        "bfloat16": TensorProto.BFLOAT16,
    }[dtype]


def build_spec_model(case: Case, options: SpecOptions = SpecOptions()) -> Any:
    """The ModelProto for `case.structure`: dynamic batch and seq_len, torch-layout outputs."""
    import onnx
    from onnx import TensorProto, helper

    elem = onnx_elem_type(case.dtype)
    h, d, layers = case.hidden_size, case.num_directions, case.num_layers
    layout = 1 if case.batch_first else 0
    x_dims: list[str | int] = ["batch", "seq_len", case.input_size] if layout else ["seq_len", "batch", case.input_size]
    inputs = [helper.make_tensor_value_info("x", elem, x_dims)]
    if case.initial_state:
        inputs.append(helper.make_tensor_value_info("h0", elem, [layers * d, "batch", h]))
    if case.packed:
        inputs.append(helper.make_tensor_value_info("lengths", TensorProto.INT64, ["batch"]))
    nodes: list[Any] = []
    inits = [helper.make_tensor("flat", TensorProto.INT64, [3], [0, 0, -1])]
    if case.packed:
        nodes.append(helper.make_node("Cast", ["lengths"], ["seq_lens"], to=TensorProto.INT32))
    layer_in, hs = "x", []
    for layer in range(layers):
        in_size = case.input_size if layer == 0 else d * h
        inputs.append(helper.make_tensor_value_info(f"W_l{layer}", elem, [d, 3 * h, in_size]))
        inputs.append(helper.make_tensor_value_info(f"R_l{layer}", elem, [d, 3 * h, h]))
        if case.bias:
            inputs.append(helper.make_tensor_value_info(f"B_l{layer}", elem, [d, 6 * h]))
        init_h = ""
        if case.initial_state:
            inits += [
                helper.make_tensor(f"h0_start_l{layer}", TensorProto.INT64, [1], [layer * d]),
                helper.make_tensor(f"h0_end_l{layer}", TensorProto.INT64, [1], [(layer + 1) * d]),
            ]
            init_h = f"h0_l{layer}"
            sliced = init_h + ("_tm" if layout else "")
            nodes.append(helper.make_node("Slice", ["h0", f"h0_start_l{layer}", f"h0_end_l{layer}"], [sliced]))
            if layout:
                nodes.append(helper.make_node("Transpose", [sliced], [init_h], perm=[1, 0, 2]))
        nodes.append(
            helper.make_node(
                "GRU",
                [
                    layer_in,
                    f"W_l{layer}",
                    f"R_l{layer}",
                    f"B_l{layer}" if case.bias else "",
                    "seq_lens" if case.packed else "",
                    init_h,
                ],
                [f"Y_l{layer}", f"Yh_l{layer}"],
                hidden_size=h,
                direction="bidirectional" if case.bidirectional else "forward",
                linear_before_reset=options.linear_before_reset,
                layout=layout,
                **options.attributes(d),
            )
        )
        out = "output" if layer == layers - 1 else f"X_l{layer + 1}"
        if layout:  # Y is (B, T, D, H): merging the last two axes gives torch's (B, T, D*H)
            nodes.append(helper.make_node("Reshape", [f"Y_l{layer}", "flat"], [out]))
        else:  # Y is (T, D, B, H) -> (T, B, D, H) -> (T, B, D*H)
            nodes.append(helper.make_node("Transpose", [f"Y_l{layer}"], [f"Yt_l{layer}"], perm=[0, 2, 1, 3]))
            nodes.append(helper.make_node("Reshape", [f"Yt_l{layer}", "flat"], [out]))
        hn = f"Yh_l{layer}"
        if layout:  # Y_h is (B, D, H) -> (D, B, H)
            nodes.append(helper.make_node("Transpose", [hn], [hn + "_t"], perm=[1, 0, 2]))
            hn += "_t"
        hs.append(hn)
        layer_in = out
    nodes.append(helper.make_node("Concat", hs, ["h_n"], axis=0))
    out_dims: list[str | int] = ["batch", "seq_len", d * h] if layout else ["seq_len", "batch", d * h]
    outputs = [
        helper.make_tensor_value_info("output", elem, out_dims),
        helper.make_tensor_value_info("h_n", elem, [layers * d, "batch", h]),
    ]
    graph = helper.make_graph(nodes, "spec_gru", inputs, outputs, initializer=inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", SPEC_OPSET)], producer_name="gru-conformance"
    )
    onnx.checker.check_model(model, full_check=True)
    return model


_MODELS: dict[str, bytes] = {}  # serialized models by structure and options, shared by every runtime


@dataclass(frozen=True)
class SpecSource(ModelSource):
    """The spec-built model as a source; `options` other than the defaults plant a bug (tests only)."""

    options: SpecOptions = field(default_factory=SpecOptions)
    name = "spec"

    def prepared(self, case: Case, weights: Weights) -> Prepared:
        key = f"spec{self.options.tag}:{case.structure}:{case.enforce_sorted}"
        if key not in _MODELS:
            try:
                _MODELS[key] = build_spec_model(case, self.options).SerializeToString()
            except Exception as error:  # onnx.checker refusing the spec graph (a dtype, say)
                raise UnsupportedCase(f"onnx.checker: {first_line(error)}") from error
        return Prepared(key, _MODELS[key], spec_weights(case, weights, self.options), {})

    def describe(self) -> dict[str, Any]:
        return {
            "opset": SPEC_OPSET,
            "form": "GRU op (chain per layer)",
            "linear_before_reset": self.options.linear_before_reset,
            **{k: str(v) for k, v in self.options.attributes(1).items()},
        }
