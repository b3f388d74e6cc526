"""The spec-built GRU node with ONNX attributes torch has no equivalent of: `activations` and `clip`.

Gates through HardSigmoid with Keras 3's parameters (alpha=1/6, beta=0.5: `keras.activations.
hard_sigmoid` is relu6(x + 3) / 6, not ONNX's default alpha=0.2), the candidate through Tanh,
and every activation's input clipped to [-CLIP, CLIP]. The source declares that form and the
oracle's recurrence computes it (`conformance.forms.Form`), so a runtime that silently ignores
an attribute fails, and the diagnosis says which one it ignored.

CLIP = 0.5 bounds a good share of the pre-activations of the suite's data (weights U(-1/sqrt(H),
1/sqrt(H)), inputs U(-1, 1)): a runtime that drops it can't pass by luck.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backends.onnx.source_spec import SpecOptions, SpecSource
from conformance.forms import TANH, Activation, Form

KERAS_HARD_SIGMOID = Activation("HardSigmoid", alpha=1.0 / 6.0, beta=0.5)
CLIP = 0.5


@dataclass(frozen=True)
class SpecActivationsSource(SpecSource):
    options: SpecOptions = field(
        default_factory=lambda: SpecOptions(
            activations=("HardSigmoid", "Tanh"),
            activation_alpha=(KERAS_HARD_SIGMOID.alpha or 0.0,),
            activation_beta=(KERAS_HARD_SIGMOID.beta or 0.0,),
            clip=CLIP,
        )
    )
    name = "spec-activations"
    form = Form(gate_activation=KERAS_HARD_SIGMOID, candidate_activation=TANH, clip=CLIP)
