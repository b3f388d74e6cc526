"""`torch.compile(nn.GRU)` with inductor: a different GRU implementation, verified compiled on every run.

Why `allow_rnn`. Out of the box dynamo declines to wrap `nn.RNN`/`GRU`/`LSTM` ("Attempted
to wrap RNN, GRU, or LSTM"), compiles nothing and runs the module eagerly without an error:
a "compiled" column would compare PyTorch with itself. With
`torch._dynamo.config.allow_rnn = True` dynamo traces `nn.GRU.forward`, and inductor
lowers the recurrence into its own kernels (C++/OpenMP on the CPU, Triton on CUDA),
unrolled over the time steps. The flag is process-global, so it is set around each call
and restored.

Verification. The compile backend is inductor's own entry point (`compile_fx`, what
`backend="inductor"` calls), wrapped to record every graph it compiles (whether it holds
the GRU op, its size, its compile time) and to count the calls of each. A run in which no
compiled graph holding the GRU ran fell back to eager and never counts as this backend:
when dynamo logged a graph break it is `unsupported`, quoting dynamo (packed input today:
a data-dependent operator), otherwise an error.

Compiling. One module per structure (`Case.structure`) on each device, each case's weights
copied into its parameters, so new weights never recompile. `dynamic=False`: the time
loop is unrolled, so every seq_len needs its own graph whatever dynamic says, and a static
graph per (structure, batch, seq_len) keeps a case's kernels independent of which cases
ran before it (automatic dynamic shapes would not). An `xother` case first calls the
module at its export dims, so its own run must pass through dynamo's shape guards and
recompile. `recompile_limit` is raised around each call: the suite compiles many
structures through the one `GRU.forward` in a process, which a program compiling its one
GRU never does; the verification above would still catch a fallback. The time loop is
unrolled cell by cell, so compile time grows with steps x layers x directions: cases above
a budget of cells are not run (`cells`, `MAX_CELLS`), and say so.

Cache. Inductor's FX graph and AOTAutograd caches (on by default) live in
`$GRU_CONFORMANCE_CACHE/inductor`, else `<repo>/.cache/inductor`, through
`TORCHINDUCTOR_CACHE_DIR` unless the user set it; a second run compiles from the cache.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backends.torch_eager import REFUSALS, TorchGru, gradient, precision_scope, refusals, to_numpy, to_torch
from conformance.case import Case
from conformance.contract import Availability, UnsupportedCase, first_line
from conformance.data import Cotangents, GradientTensors, GruOutput, Inputs, Weights, case_data

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_ENV = "GRU_CONFORMANCE_CACHE"
INDUCTOR_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"
RECOMPILE_LIMIT = 1024  # far above any tier's (structure, batch, seq_len) count per process
MAX_CELLS_ENV = "GRU_CONFORMANCE_COMPILE_MAX_CELLS"
MAX_CELLS = 64  # GRU cells (seq_len x layers x directions) one case may unroll; see `cells`


def cells(case: Case) -> int:
    """The GRU cells inductor unrolls for a case: the larger of its run and its first call (`export_dims`).

    Inductor's decomposition of `aten.gru` loops over time in Python, so a graph holds one
    cell per (step, layer, direction), each with its own C++ kernels: the first compile
    costs about 2-4 s per cell on two shared cores (a 40-cell GRU 174 s), so a 260-step,
    3-layer bidirectional case (1560 cells) would take hours. Cases above the budget are
    not run; `$GRU_CONFORMANCE_COMPILE_MAX_CELLS` raises it.
    """
    steps = max(case.seq_len, case.export_dims[1])  # export_dims is the run shape for `xsame`
    return steps * case.num_layers * case.num_directions


def first_call(case: Case) -> Case:
    """The call that compiles the graph of an `xother` or `xdegenerate` case: the same structure at `export_dims`.

    A packed batch of one item or one step can only be full, so a degenerate first call of a
    packed case has full lengths (as the ONNX exporters' trace of it does).
    """
    batch, seq_len = case.export_dims
    lengths = case.lengths
    if case.packed and (batch < 2 or seq_len < 2):
        lengths = "full"
    return Case.from_dict(
        case.as_dict() | {"batch": batch, "seq_len": seq_len, "lengths": lengths, "export_shape": "same"}
    )


def max_cells() -> int:
    return int(os.environ.get(MAX_CELLS_ENV, MAX_CELLS))


# Read before torch is imported: inductor writes its own default into the variable once it looks.
USER_INDUCTOR_CACHE = os.environ.get(INDUCTOR_CACHE_ENV)


def inductor_cache_dir() -> str:
    """Where inductor caches: the user's `TORCHINDUCTOR_CACHE_DIR`, else ours under the suite's cache root."""
    if USER_INDUCTOR_CACHE:
        return USER_INDUCTOR_CACHE
    root = os.environ.get(CACHE_ENV)
    return str((Path(root) if root else REPO_ROOT / ".cache") / "inductor")


def use_inductor_cache() -> str:
    """Point inductor at `inductor_cache_dir()` (it reads the variable whenever it looks for its cache)."""
    os.environ[INDUCTOR_CACHE_ENV] = inductor_cache_dir()
    return os.environ[INDUCTOR_CACHE_ENV]


@dataclass
class CompiledGraph:
    """One graph inductor compiled: whether it holds the GRU, its size, its compile time, its calls."""

    holds_gru: bool
    nodes: int
    compile_s: float = 0.0
    calls: int = 0


@dataclass
class CompileLog:
    """Inductor as the compile backend, recording each graph it compiles and counting each one's calls."""

    graphs: list[CompiledGraph] = field(default_factory=list)

    def backend(self, graph_module: Any, example_inputs: list[Any]) -> Any:
        from torch._inductor.compile_fx import compile_fx

        targets = [str(node.target) for node in graph_module.graph.nodes if node.op == "call_function"]
        record = CompiledGraph(holds_gru=any("gru" in t.lower() for t in targets), nodes=len(graph_module.graph.nodes))
        started = time.perf_counter()
        compiled: Any = compile_fx(graph_module, example_inputs)
        record.compile_s = time.perf_counter() - started
        self.graphs.append(record)

        def run(*args: Any) -> Any:
            record.calls += 1
            return compiled(*args)

        return run

    def gru_calls(self) -> int:
        return sum(g.calls for g in self.graphs if g.holds_gru)


def dynamo_refusals(torch: Any) -> dict[str, int]:
    """Dynamo's graph-break and unimplemented counters: where it declined to trace, and why."""
    from torch._dynamo.utils import counters

    return {**counters["graph_break"], **counters["unimplemented"]}


def graph_break(message: str) -> str:
    """Dynamo's graph-break entry in one line: its type and its explanation."""
    lines = [ln.strip() for ln in message.strip().splitlines() if ln.strip()]
    explanation = next((ln.removeprefix("Explanation:").strip() for ln in lines if ln.startswith("Explanation:")), "")
    return f"{lines[0]}: {explanation}" if explanation else lines[0]


@contextmanager
def dynamo_scope(torch: Any, allow_rnn: bool) -> Iterator[None]:
    """`allow_rnn` and a recompile limit for the length of a call, then dynamo's own settings back."""
    config = torch._dynamo.config
    saved = (config.allow_rnn, config.recompile_limit, config.accumulated_recompile_limit)
    config.allow_rnn = allow_rnn
    config.recompile_limit = config.accumulated_recompile_limit = RECOMPILE_LIMIT
    try:
        yield
    finally:
        config.allow_rnn, config.recompile_limit, config.accumulated_recompile_limit = saved


@dataclass
class CompiledTorchGru(TorchGru):
    """`torch.compile(nn.GRU, backend=inductor, dynamic=False)` under `allow_rnn`; eager's code for the rest.

    `allow_rnn=False` is the out-of-the-box setting: tests use it to check that a fallback to
    eager is caught.
    """

    family: str = "torch-compile"
    allow_rnn: bool = True
    log: CompileLog = field(default_factory=CompileLog, repr=False)
    compiled: dict[tuple[Any, ...], tuple[Any, Any]] = field(default_factory=dict, repr=False)
    timings: dict[str, float] = field(default_factory=dict, repr=False)  # case id -> first-call seconds

    def availability(self) -> Availability:
        """torch and the device (as eager), plus what inductor needs to compile: a C++ compiler on the CPU."""
        eager = super().availability()
        if not eager.available or self.device != "cpu":
            return eager
        use_inductor_cache()  # before inductor looks for a compiler (it locks in its cache dir)
        from torch._inductor import cpp_builder, exc

        try:
            cpp_builder.get_cpp_compiler()
        except exc.InvalidCxxCompiler as error:
            return Availability(False, f"inductor finds no C++ compiler: {first_line(error)}", "apt-get install g++")
        return eager

    def supports(self, case: Case) -> str | None:
        if cells(case) > max_cells():
            return (
                f"not compiled here: inductor unrolls this case into {cells(case)} GRU cells (steps x layers x "
                f"directions), each compiled to its own C++ kernels; the suite's budget is {max_cells()} cells per "
                f"case (${MAX_CELLS_ENV} raises it). A budget of this suite, not a refusal of torch"
            )
        return None

    def describe(self) -> dict[str, Any]:
        import torch

        notes = super().describe()
        use_inductor_cache()
        compile_s = [g.compile_s for g in self.log.graphs]
        if self.device == "cpu":
            from torch._inductor import cpp_builder

            info = cpp_builder.get_compiler_version_info(cpp_builder.get_cpp_compiler())
            notes["cpp_compiler"] = next((p for p in info.split("_") if " version " in p), info).strip()
        notes["compile"] = {
            "backend": "inductor (torch._inductor.compile_fx.compile_fx, wrapped to count graph calls)",
            "dynamic": False,
            "torch._dynamo.config.allow_rnn": self.allow_rnn,
            "torch._dynamo.config.recompile_limit": RECOMPILE_LIMIT,
            "max_cells_per_case": max_cells(),
            "fx_graph_cache": bool(torch._inductor.config.fx_graph_cache),
            "autograd_cache": bool(torch._functorch.config.enable_autograd_cache),
            "inductor_cache_dir": inductor_cache_dir(),
        }
        if self.log.graphs:  # the suite asks before the first run; each result's backend_s holds its compile
            notes["compile"] |= {
                "structures": len(self.compiled),
                "graphs_compiled": len(self.log.graphs),
                "graphs_holding_gru": sum(g.holds_gru for g in self.log.graphs),
                "inductor_compile_s": {"total": round(sum(compile_s), 2), "max": round(max(compile_s), 2)},
                # first call of each case: dynamo tracing + inductor (or its cache) + the run itself
                "first_call_s": {
                    "total": round(sum(self.timings.values()), 2),
                    "max": round(max(self.timings.values()), 2),
                },
            }
        return notes

    def _module(self, case: Case, weights: Weights) -> tuple[Any, Any]:
        """The structure's module, holding this case's weights, and its compiled wrapper."""
        import torch

        key = case.structure
        if key not in self.compiled:
            use_inductor_cache()
            module = self.build(case, weights)
            self.compiled[key] = (module, torch.compile(module, backend=self.log.backend, dynamic=False))
        module, compiled = self.compiled[key]
        state = {k: to_torch(torch, v, case.dtype, self.device) for k, v in weights.tensors.items()}
        module.load_state_dict(state, strict=True)  # copies in place: the compiled graph's parameters
        return module, compiled

    def _call(self, compiled: Any, case: Case, inputs: Inputs) -> tuple[Any, Any]:
        import torch

        x = to_torch(torch, inputs.x, case.dtype, self.device)
        h0 = None if inputs.h0 is None else to_torch(torch, inputs.h0, case.dtype, self.device)
        return self._call_tensors(compiled, case, x, h0, inputs.lengths)

    def _call_tensors(self, compiled: Any, case: Case, x: Any, h0: Any, lengths: Any) -> tuple[Any, Any]:
        import torch
        from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

        if lengths is None:
            return compiled(x, h0)
        packed = pack_padded_sequence(
            x, torch.tensor(np.array(lengths)), batch_first=case.batch_first, enforce_sorted=case.enforce_sorted
        )
        packed_out, h_n = compiled(packed, h0)
        output, _ = pad_packed_sequence(packed_out, batch_first=case.batch_first, total_length=case.seq_len)
        return output, h_n

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        import torch

        _, compiled = self._module(case, weights)
        started = time.perf_counter()
        try:
            with torch.no_grad(), precision_scope(torch, self.precision), dynamo_scope(torch, self.allow_rnn):
                if case.export_shape != "same":  # built at the trace shape first: the run must recompile
                    first = first_call(case)
                    self._call(compiled, first, case_data(first)[1])
                declined_before, ran = dynamo_refusals(torch), self.log.gru_calls()
                output, h_n = self._call(compiled, case, inputs)
        except (RuntimeError, NotImplementedError) as error:  # as eager: a kernel missing for a dtype is a refusal
            if any(refusal in str(error) for refusal in REFUSALS):
                raise UnsupportedCase(first_line(error)) from error
            raise
        self.timings.setdefault(case.id, time.perf_counter() - started)
        self._ran_compiled(torch, ran, declined_before)
        return GruOutput(output=to_numpy(output, case.dtype), h_n=to_numpy(h_n, case.dtype))

    def _ran_compiled(self, torch: Any, ran: int, refusals: dict[str, int]) -> None:
        """Raise unless a compiled graph holding the GRU ran since `ran` calls (eager is not this column)."""
        if self.log.gru_calls() == ran:
            declined = sorted(k for k, n in dynamo_refusals(torch).items() if n > refusals.get(k, 0))
            reason = "torch.compile fell back to eager: no compiled graph holding the GRU ran"
            if declined:
                raise UnsupportedCase(f"{reason}; dynamo: {'; '.join(graph_break(d) for d in declined)}")
            raise RuntimeError(f"{reason}, and dynamo logged no graph break")

    def run_backward(self, case: Case, weights: Weights, inputs: Inputs, cotangents: Cotangents) -> GradientTensors:
        """Autograd through the compiled graph (AOTAutograd's backward, compiled by inductor), verified compiled.

        Eager's `run_backward` would differentiate `nn.GRU` eagerly: a second copy of the torch
        column, not the compiled implementation this column stands for.
        """
        import torch

        module, compiled = self._module(case, weights)
        module.zero_grad(set_to_none=True)
        x = to_torch(torch, inputs.x, case.dtype, self.device).requires_grad_()
        h0 = None if inputs.h0 is None else to_torch(torch, inputs.h0, case.dtype, self.device).requires_grad_()
        g_output = to_torch(torch, cotangents.output, case.dtype, self.device)
        g_h_n = to_torch(torch, cotangents.h_n, case.dtype, self.device)
        with (
            refusals(),
            torch.enable_grad(),
            precision_scope(torch, self.precision),
            dynamo_scope(torch, self.allow_rnn),
        ):
            before, ran = dynamo_refusals(torch), self.log.gru_calls()
            output, h_n = self._call_tensors(compiled, case, x, h0, inputs.lengths)
            ((output * g_output).sum() + (h_n * g_h_n).sum()).backward()
        self._ran_compiled(torch, ran, before)
        leaves = {"x": x, **({"h0": h0} if h0 is not None else {}), **dict(module.named_parameters())}
        return {name: gradient(leaf, case.dtype) for name, leaf in leaves.items()}


def backends() -> Iterator[CompiledTorchGru]:
    """torch-compile[cpu] always (possibly unavailable, with the reason), [cuda] when torch sees a GPU."""
    yield CompiledTorchGru(device="cpu")
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        yield CompiledTorchGru(device="cuda")
