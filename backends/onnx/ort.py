"""onnxruntime as a runtime: the CPU execution provider, and the CUDA EP when the installed build has it.

Weight binding. Models take their weights as graph inputs. How ORT gets them is
`GRU_CONFORMANCE_ONNX_WEIGHTS`:
- `initializers` (default): the case's weights are written back as initializers
  and a session is made for that (model, weights). This is the deployed form:
  ORT constant-folds an exporter's gate reordering and pre-packs constant GRU
  weights, so the kernels the cell checks are the ones users run.
- `inputs`: one session per model, weights fed with x. Faster on sessions, but
  exercises ORT's non-prepacked path; `benchmarks/bench_onnx.py` measures both.

Precision: strict mode turns the CUDA EP's TF32 off (`use_tf32=0`); default mode
leaves ORT's own setting. The CPU EP has no such switch.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np

from backends.onnx.model_source import Prepared
from backends.onnx.runtime import OUTPUTS, Runtime
from conformance.cache import IN_MEMORY, Lru
from conformance.case import Case
from conformance.contract import Availability, Refusal, UnsupportedCase, first_line

WEIGHTS_ENV = "GRU_CONFORMANCE_ONNX_WEIGHTS"

# What the CPU execution provider's GRU kernel (onnxruntime/core/providers/cpu/rnn/deep_cpu_gru.h)
# refuses, quoted from its errors. Declared so the tier plans cases it can run; every run still
# attempts one case of each (`conformance.plan`), so an onnxruntime that gains a kernel fails the
# run (`unexpected_support`) until the declaration goes. The CUDA EP's are not declared (not measured).
CPU_REFUSALS = {
    "float64": Refusal(
        "ort-cpu-gru-float64",
        "onnxruntime CPU EP: RuntimeException: Non-zero status code returned while running GRU node. "
        "Status Message: GRU operator does not support double yet",
    ),
    "bfloat16": Refusal(
        "ort-cpu-gru-bfloat16",
        "onnxruntime CPU EP has no bfloat16 GRU kernel: NOT_IMPLEMENTED : Could not find an implementation for "
        "GRU(22) node (below opset 22, the graph itself is refused: INVALID_GRAPH : Type Error: Type "
        "'tensor(bfloat16)' of input parameter (x) of operator (GRU) is invalid)",
    ),
}
CPU_LAYOUT = Refusal(
    "ort-cpu-gru-layout-1",
    "onnxruntime CPU EP: Fail: DeepCpuGruOp: layout_ == 0 was false. Batchwise recurrent operations (layout == 1) "
    "are not supported",
)


def weights_mode() -> str:
    mode = os.environ.get(WEIGHTS_ENV, "initializers")
    if mode not in ("initializers", "inputs"):
        raise ValueError(f"{WEIGHTS_ENV} must be 'initializers' or 'inputs', not {mode!r}")
    return mode


def bind_initializers(model: bytes, feeds: dict[str, np.ndarray]) -> bytes:
    """The model with these weight inputs turned into initializers holding `feeds`."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load_from_string(model)
    kept = [i for i in proto.graph.input if i.name not in feeds]
    del proto.graph.input[:]
    proto.graph.input.extend(kept)
    proto.graph.initializer.extend(numpy_helper.from_array(np.asarray(v), k) for k, v in feeds.items())
    return proto.SerializeToString()


def _classify(error: Exception, stage: str) -> Exception:
    """ORT refusing a kernel or type is `unsupported` (quoted); anything else stays an error."""
    text = str(error)
    refusal = type(error).__name__ == "NotImplemented" or any(
        marker in text for marker in ("NOT_IMPLEMENTED", "Type Error", "not supported", "does not support")
    )
    return UnsupportedCase(f"onnxruntime {stage}: {first_line(error)}") if refusal else error


class OrtRunner:
    """onnxruntime sessions: one per model (inputs mode) or per (model, weights) (initializers mode)."""

    def __init__(self, provider: str, provider_options: dict[str, str] | None = None) -> None:
        self.provider = provider
        self.provider_options = provider_options or {}
        self.sessions: Lru[str, Any] = Lru(IN_MEMORY)
        self.created = 0
        self.create_s = 0.0

    def _session(self, key: str, model: bytes) -> Any:
        import time

        import onnxruntime as ort

        if key not in self.sessions:
            options = ort.SessionOptions()
            options.log_severity_level = 4  # refusals are reported as cell results, not log noise
            started = time.perf_counter()
            try:
                provider = (self.provider, self.provider_options) if self.provider_options else self.provider
                session = ort.InferenceSession(model, options, providers=[provider])
            except Exception as error:
                raise _classify(error, "session creation") from error
            self.create_s += time.perf_counter() - started
            self.created += 1
            if weights_mode() == "initializers":
                return session  # never reused: the weights are baked in
            self.sessions[key] = session
        return self.sessions[key]

    def run(self, prepared: Prepared, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if weights_mode() == "initializers":
            digest = hashlib.sha1(b"".join(np.ascontiguousarray(v).tobytes() for v in prepared.weight_feeds.values()))
            model = bind_initializers(prepared.model, prepared.weight_feeds)
            session = self._session(prepared.key + digest.hexdigest(), model)
        else:
            session = self._session(prepared.key, prepared.model)
            feeds = feeds | prepared.weight_feeds
        try:
            return session.run(OUTPUTS, feeds)
        except Exception as error:
            raise _classify(error, "run") from error


class OrtRuntime(Runtime):
    name = "ort"
    modules = ("onnxruntime",)

    @staticmethod
    def provider(device: str) -> str:
        return "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"

    @staticmethod
    def provider_options(device: str, precision: str) -> dict[str, str]:
        """Strict precision turns the CUDA EP's TF32 off; default mode leaves ORT's own setting."""
        return {"use_tf32": "0"} if device == "cuda" and precision == "strict" else {}

    def devices(self) -> list[str]:
        try:
            import onnxruntime
        except ImportError:
            return ["cpu"]  # the column then reports onnxruntime as not importable
        return ["cpu"] + (["cuda"] if "CUDAExecutionProvider" in onnxruntime.get_available_providers() else [])

    def availability(self, device: str) -> Availability:
        import onnxruntime

        if self.provider(device) not in onnxruntime.get_available_providers():
            return Availability(False, f"onnxruntime has no {self.provider(device)}")
        return Availability.ok()

    def refusals(self, case: Case, device: str, layout: int) -> tuple[Refusal, ...]:
        if device != "cpu":
            return ()
        found = [CPU_REFUSALS[case.dtype]] if case.dtype in CPU_REFUSALS else []
        return (*found, CPU_LAYOUT) if layout == 1 else tuple(found)

    def describe(self, device: str, precision: str) -> dict[str, Any]:
        import onnxruntime

        options = self.provider_options(device, precision)
        tf32 = options.get("use_tf32", "ORT default") if device == "cuda" else "n/a (CPU EP)"
        return {
            "onnxruntime": onnxruntime.__version__,
            "provider": self.provider(device),
            "weights": weights_mode(),
            "precision": {"mode": precision, "ort_cuda_use_tf32": tf32},
        }

    def runner(self, device: str, precision: str) -> OrtRunner:
        return OrtRunner(self.provider(device), self.provider_options(device, precision))


ORT = OrtRuntime()
