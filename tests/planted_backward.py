"""Differentiable GRUs with one known gradient bug each: the backward check must catch every one, and name it.

`AutogradGru` is a correct one (torch autograd on `nn.GRU`, packed as a user packs), written
here independently of `backends/torch_eager.py`. Each planted subclass changes one step, the
way a real adapter or converter gets a backward wrong. The forward values stay right (a bug
only in how gradients flow uses the straight-through form `right.detach() + wrong - wrong.detach()`),
so only the backward check can see it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from backends.torch_eager import refusals, to_numpy, to_torch
from conformance.case import Case
from conformance.contract import BaseBackend
from conformance.data import Cotangents, GradientTensors, GruOutput, Inputs, Weights


def _straight_through(value: Any, gradient_path: Any) -> Any:
    """`value` forward, but gradients flow through `gradient_path` instead."""
    return value.detach() + gradient_path - gradient_path.detach()


@dataclass
class AutogradGru(BaseBackend):
    """A correct GRU and backward: the control every planted bug is measured against."""

    family: str = "planted-grad-none"

    def library_weights(self, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The weights the 'library' holds (a planted fold changes them)."""
        return tensors

    def module(self, case: Case, tensors: dict[str, np.ndarray]) -> Any:
        import torch

        module = torch.nn.GRU(
            case.input_size,
            case.hidden_size,
            case.num_layers,
            bias=case.bias,
            batch_first=case.batch_first,
            bidirectional=case.bidirectional,
            dtype=getattr(torch, case.dtype),
        )
        module.load_state_dict({k: to_torch(torch, v, case.dtype, "cpu") for k, v in tensors.items()})
        return module

    def packed(self, case: Case, module: Any, x: Any, h0: Any, lengths: np.ndarray | None) -> tuple[Any, Any]:
        import torch
        from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

        if lengths is None:
            return module(x, h0)  # type: ignore[no-any-return]
        packed = pack_padded_sequence(
            x, torch.tensor(np.array(lengths)), batch_first=case.batch_first, enforce_sorted=case.enforce_sorted
        )
        out, h_n = module(packed, h0)
        return pad_packed_sequence(out, batch_first=case.batch_first, total_length=case.seq_len)[0], h_n

    def forward(self, case: Case, module: Any, x: Any, h0: Any, lengths: np.ndarray | None) -> tuple[Any, Any]:
        return self.packed(case, module, x, h0, lengths)

    def state_dict_gradients(self, case: Case, grads: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The library's parameter gradients in the state_dict layout (a planted fold's adjoint changes them)."""
        return grads

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        import torch

        module = self.module(case, self.library_weights(weights.tensors))
        h0 = None if inputs.h0 is None else to_torch(torch, inputs.h0, case.dtype, "cpu")
        with refusals(), torch.no_grad():  # as the torch adapter: a length of 0 is torch's refusal
            output, h_n = self.forward(case, module, to_torch(torch, inputs.x, case.dtype, "cpu"), h0, inputs.lengths)
        return GruOutput(to_numpy(output, case.dtype), to_numpy(h_n, case.dtype))

    def run_backward(self, case: Case, weights: Weights, inputs: Inputs, cotangents: Cotangents) -> GradientTensors:
        import torch

        module = self.module(case, self.library_weights(weights.tensors))
        x = to_torch(torch, inputs.x, case.dtype, "cpu").requires_grad_()
        h0 = None if inputs.h0 is None else to_torch(torch, inputs.h0, case.dtype, "cpu").requires_grad_()
        with refusals():
            output, h_n = self.forward(case, module, x, h0, inputs.lengths)
        g_out = to_torch(torch, cotangents.output, case.dtype, "cpu")
        g_h = to_torch(torch, cotangents.h_n, case.dtype, "cpu")
        ((output * g_out).sum() + (h_n * g_h).sum()).backward()

        def grad(leaf: Any) -> np.ndarray:
            return to_numpy(leaf.grad if leaf.grad is not None else torch.zeros_like(leaf), case.dtype)

        tensors = {"x": grad(x)}
        if h0 is not None:
            tensors["h0"] = grad(h0)
        params = {name: grad(p) for name, p in module.named_parameters()}
        return {**tensors, **self.state_dict_gradients(case, params)}


@dataclass
class DetachedH0(AutogradGru):
    """Feeds `h0.detach()` to the GRU: autograd never reaches h0, so its gradient reads as zero."""

    family: str = "planted-grad-detached-h0"

    def forward(self, case: Case, module: Any, x: Any, h0: Any, lengths: np.ndarray | None) -> tuple[Any, Any]:
        return self.packed(case, module, x, None if h0 is None else h0.detach(), lengths)


@dataclass
class FoldedBiasOneSide(AutogradGru):
    """A library without b_hr, b_hz (like flax linen): they are folded into b_ir, b_iz, but the fold's
    adjoint sends the folded bias's gradient to b_ir, b_iz only, none to b_hr, b_hz."""

    family: str = "planted-grad-fold-one-side"

    def library_weights(self, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        folded = dict(tensors)
        for name in [n for n in tensors if n.startswith("bias_ih")]:
            b_ih, b_hh = (
                tensors[name].astype(np.float64),
                tensors[name.replace("bias_ih", "bias_hh")].astype(np.float64),
            )
            two = 2 * (len(b_ih) // 3)
            folded[name] = np.concatenate([b_ih[:two] + b_hh[:two], b_ih[two:]]).astype(tensors[name].dtype)
            folded[name.replace("bias_ih", "bias_hh")] = np.concatenate([np.zeros(two), b_hh[two:]]).astype(
                tensors[name].dtype
            )
        return folded

    def state_dict_gradients(self, case: Case, grads: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = dict(grads)
        for name in [n for n in grads if n.startswith("bias_hh")]:
            g = np.array(grads[name])
            g[: 2 * case.hidden_size] = 0  # the bug: the folded r, z biases' gradient went to bias_ih only
            out[name] = g
        return out


@dataclass
class ReverseGradientIgnoresLengths(AutogradGru):
    """In a one-layer bidirectional packed GRU, the reverse direction's gradient comes from a run over the
    padded batch as if dense: it starts at step T-1 for every item, padding included."""

    family: str = "planted-grad-reverse-lengths"

    def forward(self, case: Case, module: Any, x: Any, h0: Any, lengths: np.ndarray | None) -> tuple[Any, Any]:
        import torch

        output, h_n = self.packed(case, module, x, h0, lengths)
        if lengths is None or not case.bidirectional or case.num_layers != 1:
            return output, h_n
        dense_out, dense_h = module(x, h0)
        h = case.hidden_size
        output = torch.cat([output[..., :h], _straight_through(output[..., h:], dense_out[..., h:])], dim=-1)
        h_n = torch.stack([h_n[0], _straight_through(h_n[1], dense_h[1])])
        return output, h_n


@dataclass
class GradientThroughPadding(AutogradGru):
    """h_n's gradient flows back through the padded steps (it comes from a run over the whole padded
    batch, whose last state has seen every padded input), so padded inputs receive gradient."""

    family: str = "planted-grad-through-padding"

    def forward(self, case: Case, module: Any, x: Any, h0: Any, lengths: np.ndarray | None) -> tuple[Any, Any]:
        output, h_n = self.packed(case, module, x, h0, lengths)
        if lengths is None:
            return output, h_n
        _, dense_h = module(x, h0)
        return output, _straight_through(h_n, dense_h)


PLANTED = (DetachedH0, FoldedBiasOneSide, ReverseGradientIgnoresLengths, GradientThroughPadding)


def detached_h0() -> Iterator[DetachedH0]:
    """`--backend-module planted_backward:detached_h0`: the forward right, dL/dh0 zero."""
    yield DetachedH0()
