"""Adapters that break the contract or attack their neighbours, the way a careless third party would.

Each wraps the example NumPy adapter (a correct GRU). The suite must isolate each one: its own
results become `error` naming the broken contract, and nothing it does reaches another backend.
Factories here are loaded with `--backend-module hostile_backends:<factory>`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from example_gru_backend.adapter import NumpyGru

from conformance.case import Case
from conformance.contract import Availability
from conformance.data import GruOutput, Inputs, Weights

# --- corrupting the shared case data -------------------------------------------------------------


@dataclass
class ReplacesWeights(NumpyGru):
    """Replaces entries of `weights.tensors` (a plain dict): once shared, the next backend saw zero weights."""

    family: str = "hostile-replaces-weights"

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        for name in list(weights.tensors):
            weights.tensors[name] = np.zeros_like(weights.tensors[name])
        return super().run(case, weights, inputs)


@dataclass
class WritesThroughTorch(NumpyGru):
    """Writes into `inputs.x` through `torch.from_numpy`, which a read-only flag only turns into a warning."""

    family: str = "hostile-writes-through-torch"

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        import torch

        torch.from_numpy(inputs.x.view(np.uint8) if case.dtype == "bfloat16" else inputs.x).mul_(3)
        if inputs.h0 is not None:
            torch.from_numpy(inputs.h0.view(np.uint8) if case.dtype == "bfloat16" else inputs.h0).zero_()
        return super().run(case, weights, inputs)


def corrupting() -> Iterator[NumpyGru]:
    """The two corrupting backends first, then an honest one that must still pass."""
    yield ReplacesWeights()
    yield WritesThroughTorch()
    yield NumpyGru(family="honest")


# --- breaking the adapter contract -----------------------------------------------------------------


@dataclass
class Returns(NumpyGru):
    """`run` returns whatever `make` builds from the correct answer."""

    family: str = "hostile-returns"
    what: str = "none"

    @property
    def name(self) -> str:
        return f"{self.family}-{self.what}[{self.device}]"

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> Any:
        right = super().run(case, weights, inputs)
        if self.what == "none":
            return None
        if self.what == "tuple":
            return (right.output, right.h_n)
        if self.what == "list":
            return [right.output, right.h_n]
        if self.what == "nested-list":
            return GruOutput(right.output.tolist(), right.h_n)  # type: ignore[arg-type]
        import torch

        if self.what == "torch-float":  # converts without loss: accepted (torch has no ml_dtypes bfloat16)
            if case.dtype == "bfloat16":
                return right
            return GruOutput(torch.from_numpy(right.output), torch.from_numpy(right.h_n))  # type: ignore[arg-type]
        if self.what == "torch-bfloat16":
            output = torch.from_numpy(right.output.astype(np.float32)).to(torch.bfloat16)
            return GruOutput(output, right.h_n)  # type: ignore[arg-type]
        if self.what == "torch-requires-grad":
            return GruOutput(torch.tensor(right.output, requires_grad=True), right.h_n)  # type: ignore[arg-type]
        if self.what == "object-array":
            return GruOutput(np.array(right.output, dtype=object), right.h_n)
        raise AssertionError(self.what)


RETURNS = (
    "none",
    "tuple",
    "list",
    "nested-list",
    "torch-float",
    "torch-bfloat16",
    "torch-requires-grad",
    "object-array",
)


@dataclass
class Raises(NumpyGru):
    """One of the contract's methods raises (`where`), with `error`."""

    family: str = "hostile-raises"
    where: str = "run"
    error: type[BaseException] = RuntimeError

    @property
    def name(self) -> str:
        return f"{self.family}-{self.where}-{self.error.__name__}[{self.device}]"

    def _raise(self, where: str) -> None:
        if self.where == where:
            raise self.error(f"planted {self.error.__name__} in {where}")

    def availability(self) -> Availability:
        self._raise("availability")
        return super().availability()

    def supports(self, case: Case) -> str | None:
        self._raise("supports")
        return super().supports(case)

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        self._raise("run")
        return super().run(case, weights, inputs)

    def describe(self) -> dict[str, Any]:
        self._raise("describe")
        return super().describe()


@dataclass
class WrongTypes(NumpyGru):
    """`supports` answers True and `availability` answers a bare bool."""

    family: str = "hostile-wrong-types"
    where: str = "supports"

    @property
    def name(self) -> str:
        return f"{self.family}-{self.where}[{self.device}]"

    def availability(self) -> Any:
        return True if self.where == "availability" else super().availability()

    def supports(self, case: Case) -> Any:
        return True if self.where == "supports" else None


def contract_breakers() -> Iterator[NumpyGru]:
    for what in RETURNS:
        yield Returns(what=what)
    for where in ("availability", "supports", "run", "describe"):
        yield Raises(where=where)
    yield Raises(where="run", error=SystemExit)
    yield WrongTypes(where="supports")
    yield WrongTypes(where="availability")
    yield NumpyGru(family="honest")


# --- names ------------------------------------------------------------------------------------------


def duplicates() -> Iterator[NumpyGru]:
    """Two backends called `numpy-example[cpu]` (the example adapter's name)."""
    yield NumpyGru()


@dataclass
class NoDevice(NumpyGru):
    family: str = "hostile-no-device"

    @property
    def name(self) -> str:
        return self.family


def no_device() -> Iterator[NumpyGru]:
    yield NoDevice()


# --- time ---------------------------------------------------------------------------------------------


@dataclass
class Hangs(NumpyGru):
    """Its first `run` never returns (until `release` is set); it counts how often it is called."""

    family: str = "hostile-hangs"

    def __post_init__(self) -> None:
        self.calls = 0
        self.release = threading.Event()

    def run(self, case: Case, weights: Weights, inputs: Inputs) -> GruOutput:
        self.calls += 1
        self.release.wait(600)
        return super().run(case, weights, inputs)


def hangs() -> Iterator[NumpyGru]:
    yield Hangs()
    yield NumpyGru(family="honest")
