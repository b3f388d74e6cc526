"""PyTorch `nn.GRU` in eager mode, as users call it: the first and reference-layout backend.

Variable lengths go through `pack_padded_sequence` / `pad_packed_sequence` with
`total_length=seq_len`, and `enforce_sorted` follows the case.

Gradients (`run_backward`) are autograd's, as a user training with `nn.GRU` gets them: x and
h0 are leaf tensors that require grad, the same forward (packed the same way, under the same
precision mode) builds the graph, and `backward()` of L = sum(output * G_out) + sum(h_n * G_h)
fills `.grad` of x, h0 and every parameter, already in the state_dict layout.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from conformance.case import Case
from conformance.contract import Availability, BaseBackend, UnsupportedCase, first_line
from conformance.data import Cotangents, GradientTensors, GruOutput, Inputs, Weights
from conformance.dtypes import fmt

INSTALL_HINT = "pip install -e '.[torch]' -c constraints.txt"


def torch_dtype(torch: Any, name: str) -> Any:
    return {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}[
        name
    ]


def to_torch(torch: Any, array: np.ndarray, dtype_name: str, device: str) -> Any:
    """numpy (any declared format) -> torch tensor, exactly: bfloat16 goes through float32."""
    wide = np.asarray(array, dtype=np.float64 if dtype_name == "float64" else np.float32)
    return torch.tensor(wide, device=device).to(torch_dtype(torch, dtype_name))


def to_numpy(tensor: Any, dtype_name: str) -> np.ndarray:
    """torch tensor -> numpy in the tensor's own format (a wrong dtype must stay visible)."""
    import torch

    names = {torch.float32: "float32", torch.float64: "float64", torch.float16: "float16", torch.bfloat16: "bfloat16"}
    own = names.get(tensor.dtype, dtype_name)
    wide = tensor.detach().to("cpu", torch.float64 if own == "float64" else torch.float32).numpy()
    return wide.astype(fmt(own).numpy)


def precision_settings(torch: Any) -> dict[str, Any]:
    """The flags that decide whether float32 matmuls and cuDNN RNNs may use TF32, as they stand now."""
    settings: dict[str, Any] = {
        "torch.backends.cuda.matmul.allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "torch.backends.cudnn.allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        "torch.float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    # torch >= 2.9 also exposes per-operator fp32_precision (the cuDNN RNN one decides a GRU on CUDA).
    rnn = getattr(getattr(torch.backends.cudnn, "rnn", None), "fp32_precision", None)
    if rnn is not None:
        settings["torch.backends.cudnn.rnn.fp32_precision"] = rnn
    return settings


@contextmanager
def precision_scope(torch: Any, precision: str) -> Iterator[None]:
    """Apply a precision mode for the duration of a call, then restore the flags.

    strict turns TF32 off for matmuls and cuDNN and asks for the highest float32 matmul
    precision; default leaves torch exactly as it comes (cuDNN TF32 on, on Ampere and later).
    The flags are process-global, hence the restore: other backends and modes share the process.
    """
    if precision != "strict":
        yield
        return
    saved = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
    )
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
        torch.set_float32_matmul_precision(saved[2])


# What torch raises for what it can't do, as opposed to a crash: a kernel missing for a dtype, and
# pack_padded_sequence's refusal of a length of 0.
REFUSALS = ("not implemented for", "has to be greater than 0")


@contextmanager
def refusals() -> Iterator[None]:
    """A kernel torch doesn't have for this dtype and device ("... not implemented for 'Half'"), or a length
    of 0 (pack_padded_sequence refuses empty sequences), is a refusal."""
    try:
        yield
    except (RuntimeError, NotImplementedError) as error:
        if any(refusal in str(error) for refusal in REFUSALS):
            raise UnsupportedCase(first_line(error)) from error
        raise


def gradient(leaf: Any, dtype_name: str) -> np.ndarray:
    """A leaf's `.grad` as numpy in its own format; a leaf autograd never reached has none (None), read as zeros."""
    import torch

    grad = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
    return to_numpy(grad, dtype_name)


@dataclass
class TorchGru(BaseBackend):
    family: str = "torch"

    def availability(self) -> Availability:
        try:
            torch = importlib.import_module("torch")
        except ImportError as error:
            return Availability(False, f"torch is not importable: {first_line(error)}", INSTALL_HINT)
        if self.device == "cuda" and not torch.cuda.is_available():
            return Availability(False, "torch sees no CUDA device")
        return Availability.ok()

    def describe(self) -> dict[str, Any]:
        import torch

        with precision_scope(torch, self.precision):  # the settings `run` computes under
            settings = precision_settings(torch)
        notes: dict[str, Any] = {"torch": torch.__version__, "precision": {"mode": self.precision, **settings}}
        if self.device == "cuda":
            notes["cuda"] = torch.version.cuda
            notes["cudnn"] = torch.backends.cudnn.version()
            notes["gpu"] = torch.cuda.get_device_name()
        return notes

    def build(self, case: Case, weights: Weights) -> Any:
        """An `nn.GRU` for the case, holding exactly the canonical weights."""
        import torch

        module = torch.nn.GRU(
            case.input_size,
            case.hidden_size,
            num_layers=case.num_layers,
            bias=case.bias,
            batch_first=case.batch_first,
            bidirectional=case.bidirectional,
            device=self.device,
            dtype=torch_dtype(torch, case.dtype),
        )
        state = {k: to_torch(torch, v, case.dtype, self.device) for k, v in weights.tensors.items()}
        module.load_state_dict(state, strict=True)
        return module.eval()

    def forward(self, case: Case, module: Any, x: Any, h0: Any, lengths: np.ndarray | None) -> tuple[Any, Any]:
        """(output, h_n) as a user calls the module: packed through `pack_padded_sequence` when lengths are given."""
        import torch
        from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

        if lengths is None:
            return module(x, h0)  # type: ignore[no-any-return]
        packed = pack_padded_sequence(
            x,
            torch.tensor(np.array(lengths)),  # lengths stay on the CPU, as torch requires
            batch_first=case.batch_first,
            enforce_sorted=case.enforce_sorted,
        )
        packed_out, h_n = module(packed, h0)
        output, _ = pad_packed_sequence(packed_out, batch_first=case.batch_first, total_length=case.seq_len)
        return output, h_n

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        import torch

        module = self.build(case, weights)
        x = to_torch(torch, inputs.x, case.dtype, self.device)
        h0 = None if inputs.h0 is None else to_torch(torch, inputs.h0, case.dtype, self.device)
        with refusals(), torch.no_grad(), precision_scope(torch, self.precision):
            output, h_n = self.forward(case, module, x, h0, inputs.lengths)
        return GruOutput(output=to_numpy(output, case.dtype), h_n=to_numpy(h_n, case.dtype))

    def run_backward(self, case: Case, weights: Weights, inputs: Inputs, cotangents: Cotangents) -> GradientTensors:
        """Autograd's dL/d x, h0 (if given) and every parameter, in the case dtype and PyTorch's layout."""
        import torch

        module = self.build(case, weights)
        x = to_torch(torch, inputs.x, case.dtype, self.device).requires_grad_()
        h0 = None if inputs.h0 is None else to_torch(torch, inputs.h0, case.dtype, self.device).requires_grad_()
        g_output = to_torch(torch, cotangents.output, case.dtype, self.device)
        g_h_n = to_torch(torch, cotangents.h_n, case.dtype, self.device)
        with refusals(), torch.enable_grad(), precision_scope(torch, self.precision):
            output, h_n = self.forward(case, module, x, h0, inputs.lengths)
            ((output * g_output).sum() + (h_n * g_h_n).sum()).backward()
        leaves = {"x": x, **({"h0": h0} if h0 is not None else {}), **dict(module.named_parameters())}
        return {name: gradient(leaf, case.dtype) for name, leaf in leaves.items()}


def backends() -> Iterator[TorchGru]:
    """torch[cpu] always (possibly unavailable, with the reason), torch[cuda] when a GPU is seen."""
    yield TorchGru(device="cpu")
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        yield TorchGru(device="cuda")
