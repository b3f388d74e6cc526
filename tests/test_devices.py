"""Devices, precision modes and the cross-device check, with the GPU stubbed at its boundary.

No GPU is needed: where a test needs "a CUDA backend" it uses `torch.cuda.is_available`
patched to True (selection and naming only), or a `torch[cuda]` whose `run` computes on
the CPU (the numbers stay real: the same torch GRU, compared for real). The planted
counterpart of the fake GPU rounds its operands to TF32 as tensor cores do, the very
drift the strict mode exists to keep out.

The factories below double as `--backend-module test_devices:...` for suite runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backends import torch_eager
from backends.torch_eager import TorchGru, precision_settings
from conformance import cross_device, matrix, selection
from conformance.case import Case
from conformance.contract import Availability, BaseBackend, column, configure
from conformance.data import GruOutput, Inputs, Weights, case_data
from conformance.tolerance import derive

torch = pytest.importorskip("torch")


def tf32(array: np.ndarray) -> np.ndarray:
    """float32 rounded to TF32's 10-bit mantissa (round to nearest), as tensor cores read operands."""
    array = np.asarray(array)
    if array.dtype != np.float32:
        return array
    bits = array.view(np.uint32).astype(np.uint64)
    return ((bits + 0x1000) & ~np.uint64(0x1FFF)).astype(np.uint32).view(np.float32)


@dataclass
class FakeCudaTorch(TorchGru):
    """`torch[cuda]` by name and device, computing with the CPU torch GRU: the device stubbed, the numbers real."""

    device: str = "cuda"

    def availability(self) -> Availability:
        return Availability.ok()

    def describe(self) -> dict[str, Any]:
        return TorchGru(device="cpu", precision=self.precision).describe() | {"fake_cuda": True}

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        return TorchGru(device="cpu", precision=self.precision).run(case, weights, inputs)


@dataclass
class Tf32CudaTorch(FakeCudaTorch):
    """Planted: a GPU path that ignores strict mode and computes with TF32 operands."""

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        rounded = Weights({k: tf32(v) for k, v in weights.tensors.items()})
        x, h0 = tf32(inputs.x), None if inputs.h0 is None else tf32(inputs.h0)
        return super().run(case, rounded, Inputs(x, h0, inputs.lengths))


def _hide_real_gpu() -> None:
    """On a machine with a GPU the real `torch` entry point (loaded after every --backend-module) would
    yield its own torch[cuda], a duplicate name the suite refuses: the fake is to be the only one."""
    torch.cuda.is_available = lambda: False


def fake_cuda_torch() -> Iterator[TorchGru]:
    """`--backend-module test_devices:fake_cuda_torch`: adds a (CPU-computing) torch[cuda]."""
    _hide_real_gpu()
    yield FakeCudaTorch()


def tf32_cuda_torch() -> Iterator[TorchGru]:
    """`--backend-module test_devices:tf32_cuda_torch`: adds a torch[cuda] that uses TF32."""
    _hide_real_gpu()
    yield Tf32CudaTorch()


def torch_with_cuda_seen() -> Iterator[TorchGru]:
    """Makes torch report a GPU (for collection only), so the real `torch` entry point, loaded after
    every --backend-module, yields torch[cuda] too. It yields nothing itself: a second torch[cpu]
    would be refused as a duplicate name."""
    torch.cuda.is_available = lambda: True
    yield from ()


# -- the factory and --device --------------------------------------------------------------


def test_factory_yields_cuda_only_when_torch_sees_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert [b.name for b in torch_eager.backends()] == ["torch[cpu]"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    found = list(torch_eager.backends())
    assert [(b.name, b.device) for b in found] == [("torch[cpu]", "cpu"), ("torch[cuda]", "cuda")]
    assert found[1].availability().available


def test_cuda_backend_without_a_gpu_is_unavailable_not_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    availability = TorchGru(device="cuda").availability()
    assert not availability.available and "no CUDA device" in availability.reason


@pytest.mark.parametrize(
    ("device", "expected"),
    [("cpu", ["torch[cpu]"]), ("cuda", ["torch[cuda]"]), ("all", ["torch[cpu]", "torch[cuda]"])],
)
def test_device_option_filters_backends(monkeypatch: pytest.MonkeyPatch, device: str, expected: list[str]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert [b.name for b in selection.select(["torch"], device)] == expected


@pytest.mark.e2e
def test_suite_device_cpu_excludes_cuda(suite: Any) -> None:
    """At collection, through the real plugin: --device cpu drops torch[cuda], --device all keeps it."""
    args = ("--collect-only", "-q", "--tier", "smoke", "--backends", "torch", "--backend-module")
    cpu = suite(*args, "test_devices:torch_with_cuda_seen", "--device", "cpu")
    every = suite(*args, "test_devices:torch_with_cuda_seen", "--device", "all")
    assert cpu.returncode == 0 and every.returncode == 0, cpu.stdout + cpu.stderr + every.stderr
    assert "torch[cuda]" not in cpu.stdout and "torch[cpu]-" in cpu.stdout
    assert "test_gru[torch[cuda]-" in every.stdout
    assert "test_cross_device[torch[cpu]-vs-torch[cuda]-" in every.stdout  # a pair appears with both devices


# -- precision modes -----------------------------------------------------------------------


def test_precision_mode_names_separate_columns() -> None:
    assert column("cuda") == "cuda" and column("cuda", "default") == "cuda+default"
    assert [b.name for b in selection.select(["torch"], "cpu", precision="default")] == ["torch[cpu+default]"]
    rerun = selection.select(["torch[cpu+default]"], precision="default")  # what a rerun command passes
    assert [b.precision for b in rerun] == ["default"]
    with pytest.raises(selection.SelectionError, match=r"torch\[cpu\+default\]"):
        selection.select(["torch[cpu]"], precision="default")
    with pytest.raises(selection.SelectionError, match="unknown precision"):
        selection.select(["torch"], precision="tf32")


def test_configure_leaves_a_backend_without_the_method_alone() -> None:
    class Plain:  # the Backend protocol only, no configure()
        name, family, device = "plain[cpu]", "plain", "cpu"

    assert configure(Plain(), "default") is False  # type: ignore[arg-type]
    aware = BaseBackend("x")
    assert configure(aware, "default") is True and aware.name == "x[cpu+default]"


@pytest.fixture
def permissive_torch() -> Iterator[None]:
    """torch set up as a user might (TF32 everywhere), restored afterwards."""
    saved = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
    )
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
    torch.set_float32_matmul_precision(saved[2])


def _settings_during_run(monkeypatch: pytest.MonkeyPatch, backend: TorchGru) -> dict[str, Any]:
    """The precision flags as the GRU's forward sees them (a spy on nn.GRU.forward)."""
    seen: dict[str, Any] = {}
    forward = torch.nn.GRU.forward

    def spy(module: Any, *args: Any, **kwargs: Any) -> Any:
        seen.update(precision_settings(torch))
        return forward(module, *args, **kwargs)

    monkeypatch.setattr(torch.nn.GRU, "forward", spy)
    case = matrix.cases("smoke")[0]
    backend.run(case, *case_data(case))
    return seen


@pytest.mark.usefixtures("permissive_torch")
def test_strict_mode_turns_tf32_off_during_run_and_restores(monkeypatch: pytest.MonkeyPatch) -> None:
    strict = TorchGru()
    seen = _settings_during_run(monkeypatch, strict)
    assert seen["torch.backends.cuda.matmul.allow_tf32"] is False
    assert seen["torch.backends.cudnn.allow_tf32"] is False
    assert seen["torch.float32_matmul_precision"] == "highest"
    assert strict.describe()["precision"] == {"mode": "strict", **seen}  # recorded as applied
    # ...and the process is left as it was: the flags are global, other backends share them.
    assert torch.backends.cudnn.allow_tf32 is True and torch.get_float32_matmul_precision() == "high"


@pytest.mark.usefixtures("permissive_torch")
def test_default_mode_runs_torch_as_it_comes(monkeypatch: pytest.MonkeyPatch) -> None:
    default = TorchGru(precision="default")
    seen = _settings_during_run(monkeypatch, default)
    assert seen["torch.backends.cudnn.allow_tf32"] is True and seen["torch.float32_matmul_precision"] == "high"
    assert default.describe()["precision"]["mode"] == "default"


# -- the cross-device check ----------------------------------------------------------------


def _pair(gpu: TorchGru, precision: str = "strict") -> cross_device.DevicePair:
    cpu = TorchGru()
    cpu.configure(precision)
    gpu.configure(precision)
    [pair] = cross_device.pairs([cpu, gpu])
    return pair


def test_pairs_match_one_backend_across_devices_and_modes() -> None:
    cpu, gpu, other = TorchGru(), FakeCudaTorch(), BaseBackend("numpy", device="cuda")
    assert [p.id for p in cross_device.pairs([cpu, gpu, other])] == ["torch[cpu]-vs-torch[cuda]"]
    gpu_default = FakeCudaTorch(precision="default")
    assert cross_device.pairs([cpu, gpu_default]) == []  # strict CPU vs default GPU is no pair
    assert cross_device.pairs([cpu]) == []


CASES = matrix.cases("smoke")
SHORT = [c for c in CASES if c.seq_len <= 16]
# For suite runs: dense and packed float32, and one other dtype (the TF32 plant spares it).
FEW = [
    next(c for c in SHORT if c.dtype == "float32" and not c.packed),
    next(c for c in SHORT if c.dtype == "float32" and c.packed),
    next(c for c in SHORT if c.dtype != "float32"),
]
FEW_ARGS = tuple(arg for c in FEW for arg in ("--case", c.id))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_same_computation_on_both_devices_passes(case: Case) -> None:
    result = cross_device.check(_pair(FakeCudaTorch()), case)
    assert result.verdict == "pass", result.reason
    assert result.tolerance is not None and result.tolerance["atol"] == pytest.approx(2 * derive(case).atol)


def test_tf32_on_the_gpu_fails_strict_and_passes_default() -> None:
    float32 = [c for c in SHORT if c.dtype == "float32"]
    assert float32
    strict = [cross_device.check(_pair(Tf32CudaTorch()), c) for c in float32]
    assert all(r.verdict == "fail" for r in strict), [(r.case.id, r.worst_headroom) for r in strict]
    assert all("output" in r.reason for r in strict)
    default = [cross_device.check(_pair(Tf32CudaTorch(), "default"), c, "default") for c in float32]
    assert all(r.verdict == "pass" for r in default), [r.reason for r in default]


def test_unavailable_or_crashing_side_is_reported_not_raised() -> None:
    @dataclass
    class Missing(FakeCudaTorch):
        def availability(self) -> Availability:
            return Availability(False, "torch sees no CUDA device")

    @dataclass
    class Crashing(FakeCudaTorch):
        def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    case = CASES[0]
    skipped = cross_device.check(_pair(Missing()), case)
    assert skipped.verdict == "skipped" and "no CUDA device" in skipped.reason
    error = cross_device.check(_pair(Crashing()), case)
    assert error.verdict == "error" and "illegal memory access" in error.reason and "torch[cuda]" in error.reason
    record = error.as_record()
    assert record["kind"] == "cross_device" and record["backends"] == ["torch[cpu]", "torch[cuda]"]


def _records(path: Path, kind: str) -> list[dict[str, Any]]:
    return [r for line in path.read_text().splitlines() if (r := json.loads(line))["kind"] == kind]


@pytest.mark.e2e
def test_suite_records_cross_device_results(suite: Any, tmp_path: Path) -> None:
    run = suite(*FEW_ARGS, "--backends", "torch[*]", "--backend-module", "test_devices:fake_cuda_torch")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    records = _records(tmp_path / "results.jsonl", "cross_device")
    assert len(records) == len(FEW) and {r["verdict"] for r in records} == {"pass"}
    assert {tuple(r["backends"]) for r in records} == {("torch[cpu]", "torch[cuda]")}


@pytest.mark.e2e
def test_suite_catches_tf32_in_strict_and_names_default_columns(suite: Any, tmp_path: Path) -> None:
    planted = (*FEW_ARGS, "--backends", "torch[*]", "--backend-module", "test_devices:tf32_cuda_torch")
    strict = suite(*planted)
    assert strict.returncode == 1, strict.stdout[-3000:] + strict.stderr[-3000:]
    records = _records(tmp_path / "results.jsonl", "cross_device")
    failed = {r["case"]["dtype"] for r in records if r["verdict"] == "fail"}
    assert failed == {"float32"}, records
    assert "test_cross_device[torch[cpu]-vs-torch[cuda]-" in strict.stdout

    default = suite(*planted, "--precision", "default", "--results", str(tmp_path / "default.jsonl"))
    assert default.returncode == 0, default.stdout[-3000:]
    results = _records(tmp_path / "default.jsonl", "result")
    assert {r["backend"] for r in results} == {"torch[cpu+default]", "torch[cuda+default]"}
    assert {r["precision"] for r in results} == {"default"}
    notes = {r["backend"]: r["notes"] for r in _records(tmp_path / "default.jsonl", "backend")}
    assert notes["torch[cpu+default]"]["precision"]["mode"] == "default"
    pairs = {tuple(r["backends"]) for r in _records(tmp_path / "default.jsonl", "cross_device")}
    assert pairs == {("torch[cpu+default]", "torch[cuda+default]")}
