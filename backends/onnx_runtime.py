"""ONNX runtimes as backend columns: onnxruntime (CPU EP, CUDA EP when present) and onnx's ReferenceEvaluator.

A column is a model source (an exporter, or the spec-built model) times a runtime:
`onnx-dynamo/ort[cpu]`, `onnx-torchscript/reference[cpu]`, `onnx-spec/ort[cpu]`.

Weight binding. Stored models take the weights as graph inputs. How ORT gets them
is `GRU_CONFORMANCE_ONNX_WEIGHTS`:
- `initializers` (default): the case's weights are written back as initializers
  and a session is made for that (model, weights). This is the deployed form:
  ORT constant-folds the exporter's gate reordering and pre-packs constant GRU
  weights, so the kernels the cell checks are the ones users run.
- `inputs`: one session per model, weights fed with x. Faster on sessions, but
  exercises ORT's non-prepacked path; `benchmarks/bench_onnx.py` measures both.
The ReferenceEvaluator always gets them as inputs (it has no constant path).
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from conformance.case import Case
from conformance.contract import Availability, BaseBackend, UnsupportedCase, first_line
from conformance.data import GruOutput, Inputs, Weights

INSTALL_HINT = "pip install -e '.[onnx]' -c constraints.txt"
WEIGHTS_ENV = "GRU_CONFORMANCE_ONNX_WEIGHTS"
RUNTIMES: tuple[str, ...] = ("ort", "reference")
FAMILY = {"dynamo": "onnx-dynamo", "torchscript": "onnx-torchscript", "spec": "onnx-spec"}


def onnx_elem_type(dtype: str) -> int:
    from onnx import TensorProto

    return {
        "float32": TensorProto.FLOAT,
        "float64": TensorProto.DOUBLE,
        "float16": TensorProto.FLOAT16,
        "bfloat16": TensorProto.BFLOAT16,
    }[dtype]


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


@dataclass
class Prepared:
    """What a backend needs to run one case: model bytes, its cache key, weight feeds, facts."""

    key: str
    model: bytes
    weight_feeds: dict[str, np.ndarray]
    facts: dict[str, Any]


class OrtRunner:
    """onnxruntime sessions: one per model (inputs mode) or per (model, weights) (initializers mode)."""

    def __init__(self, provider: str, provider_options: dict[str, str] | None = None) -> None:
        self.provider = provider
        self.provider_options = provider_options or {}
        self.sessions: dict[str, Any] = {}
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
            return session.run(["output", "h_n"], feeds)
        except Exception as error:
            raise _classify(error, "run") from error


class ReferenceRunner:
    """onnx.reference.ReferenceEvaluator, one per model; weights are fed as inputs."""

    def __init__(self) -> None:
        self.evaluators: dict[str, Any] = {}

    def run(self, prepared: Prepared, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        from onnx.reference import ReferenceEvaluator

        if prepared.key not in self.evaluators:
            try:
                self.evaluators[prepared.key] = ReferenceEvaluator(prepared.model)
            except Exception as error:
                raise UnsupportedCase(f"ReferenceEvaluator: {first_line(error)}") from error
        try:
            return self.evaluators[prepared.key].run(["output", "h_n"], feeds | prepared.weight_feeds)
        except (NotImplementedError, TypeError) as error:
            raise UnsupportedCase(f"ReferenceEvaluator: {first_line(error)}") from error


def _classify(error: Exception, stage: str) -> Exception:
    """ORT refusing a kernel or type is `unsupported` (quoted); anything else stays an error."""
    text = str(error)
    refusal = type(error).__name__ == "NotImplemented" or any(
        marker in text for marker in ("NOT_IMPLEMENTED", "Type Error", "not supported", "does not support")
    )
    return UnsupportedCase(f"onnxruntime {stage}: {first_line(error)}") if refusal else error


@dataclass
class OnnxBackend(BaseBackend):
    """One column: a model source (`dynamo`, `torchscript`, `spec`) in one runtime (`ort`, `reference`)."""

    family: str = "onnx-spec"  # the entry-point name; the runtime goes into `name`
    device: str = "cpu"
    source: str = "spec"
    runtime: str = "ort"
    spec_options: Any = None  # SpecOptions for planted-bug tests; None = correct
    runner: Any = field(default=None, repr=False)
    facts: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        """`onnx-spec/ort[cpu]`: the base name with the runtime spliced in before the device column."""
        return super().name.replace("[", f"/{self.runtime}[", 1)

    @property
    def provider(self) -> str:
        return "CUDAExecutionProvider" if self.device == "cuda" else "CPUExecutionProvider"

    @property
    def provider_options(self) -> dict[str, str]:
        """Strict precision turns the CUDA EP's TF32 off; default mode leaves ORT's own setting."""
        return {"use_tf32": "0"} if self.device == "cuda" and self.precision == "strict" else {}

    def availability(self) -> Availability:
        modules = ["onnx"] + (["onnxruntime"] if self.runtime == "ort" else [])
        for module in modules:
            try:
                importlib.import_module(module)
            except ImportError as error:
                return Availability(False, f"{module} is not importable: {first_line(error)}", INSTALL_HINT)
        if self.source != "spec":
            from backends.onnx_export import exporter_available

            problem = exporter_available(self.source)
            if problem:
                return Availability(False, problem, INSTALL_HINT)
        if self.runtime == "ort":
            import onnxruntime

            if self.provider not in onnxruntime.get_available_providers():
                return Availability(False, f"onnxruntime has no {self.provider}")
        return Availability.ok()

    def describe(self) -> dict[str, Any]:
        import onnx

        notes: dict[str, Any] = {"source": self.source, "runtime": self.runtime, "onnx": onnx.__version__}
        if self.runtime == "ort":
            import onnxruntime

            notes |= {"onnxruntime": onnxruntime.__version__, "provider": self.provider, "weights": weights_mode()}
            tf32 = self.provider_options.get("use_tf32", "ORT default") if self.device == "cuda" else "n/a (CPU EP)"
            notes["precision"] = {"mode": self.precision, "ort_cuda_use_tf32": tf32}
        else:
            notes["weights"] = "inputs"
        if self.source == "spec":
            from backends.onnx_spec import SPEC_OPSET

            notes |= {"opset": SPEC_OPSET, "form": "GRU op (chain per layer)", "linear_before_reset": 1}
        else:
            from backends.onnx_export import TORCHSCRIPT_OPSET, versions

            notes |= versions()
            notes["export"] = (
                f"dynamo=False, opset {TORCHSCRIPT_OPSET}, do_constant_folding=False"
                if self.source == "torchscript"
                else "dynamo=True, optimize=False"
            ) + "; dynamic batch and seq_len; weights rebound by state_dict name"
        # Facts of the models this column ran or has cached, merged: opset, op types, GRU attributes.
        # (The plugin asks before the first run, so the on-disk cache is the useful source.)
        merged: dict[str, set[str]] = {}
        known = list(self.facts.values())
        if self.source != "spec":
            from backends.onnx_export import STORE

            known += STORE.cached_facts(self.source)
        for facts in known:
            for k, v in facts.items():
                merged.setdefault(k, set()).update(map(str, v if isinstance(v, list) else [v]))
        notes["models"] = {k: sorted(v) for k, v in merged.items()}
        return notes

    def prepare(self, cases: list[Case]) -> None:
        """Export every signature these cases need, in parallel, before the first `run`."""
        if self.source != "spec":
            from backends.onnx_export import STORE

            STORE.prepare(self.source, cases)

    def _prepared(self, case: Case, weights: Weights) -> Prepared:
        if self.source == "spec":
            from backends.onnx_spec import SpecOptions, build_spec_model, spec_weights

            options = self.spec_options or SpecOptions()
            key = f"spec{options.tag}:{case.structure}:{case.enforce_sorted}"
            if key not in _SPEC_MODELS:
                try:
                    _SPEC_MODELS[key] = build_spec_model(case, options).SerializeToString()
                except Exception as error:  # onnx.checker refusing the spec graph (a dtype, say)
                    raise UnsupportedCase(f"onnx.checker: {first_line(error)}") from error
            return Prepared(key, _SPEC_MODELS[key], spec_weights(case, weights, options), {})
        from backends.onnx_export import exported

        model = exported(self.source, case)
        feeds = {model.weights[name]: value for name, value in weights.tensors.items()}
        return Prepared(model.key, model.model, feeds, model.facts)

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        prepared = self._prepared(case, weights)
        if prepared.facts:
            self.facts[prepared.key] = prepared.facts
        if self.runner is None:
            self.runner = (
                OrtRunner(self.provider, self.provider_options) if self.runtime == "ort" else ReferenceRunner()
            )
        feeds: dict[str, np.ndarray] = {"x": np.asarray(inputs.x)}
        if inputs.h0 is not None:
            feeds["h0"] = np.asarray(inputs.h0)
        if inputs.lengths is not None:
            feeds["lengths"] = np.asarray(inputs.lengths, dtype=np.int64)
        output, h_n = self.runner.run(prepared, feeds)
        return GruOutput(output=np.asarray(output), h_n=np.asarray(h_n))


_SPEC_MODELS: dict[str, bytes] = {}


def runtime_backends(source: str) -> Iterator[OnnxBackend]:
    """A source's columns: ort[cpu] and reference[cpu] always, ort[cuda] when the CUDA EP is present."""
    family = FAMILY[source]
    yield OnnxBackend(family=family, device="cpu", source=source, runtime="ort")
    yield OnnxBackend(family=family, device="cpu", source=source, runtime="reference")
    try:
        import onnxruntime
    except ImportError:
        return
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        yield OnnxBackend(family=family, device="cuda", source=source, runtime="ort")
