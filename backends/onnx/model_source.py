"""What a model source gives a runtime: a model per case, with the case's weights as feeds.

A source is where an ONNX model comes from (torch's TorchScript exporter, its dynamo
exporter, a GRU node built from the spec). It knows nothing about how the model is
executed; a runtime (`backends.onnx.runtime`) knows nothing about where it came from.
`backends.onnx.column.OnnxColumn` puts one of each together.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from conformance.case import Case
from conformance.contract import Availability, Build, Refusal
from conformance.data import Weights
from conformance.forms import PYTORCH, Form

INSTALL_HINT = "pip install -e '.[onnx]' -c constraints.txt"


@dataclass
class Prepared:
    """What a runtime needs to run one case: model bytes, its cache key, weight feeds, facts.

    The model takes its weights as graph inputs (one model serves every weight set);
    `weight_feeds` binds this case's weights to those inputs by name. `facts` are the
    model's notes for the report (opset, op types, GRU attributes); empty when the
    source describes them statically.
    """

    key: str
    model: bytes
    weight_feeds: dict[str, np.ndarray]
    facts: dict[str, Any]


class ModelSource(ABC):
    """One way of making an ONNX GRU; a column's family is `onnx-<name>`."""

    name: str  # "spec", "torchscript", "dynamo": the report's `source` note
    form: Form = PYTORCH  # the GRU its models compute (conformance.contract.declared_form): the column's truth
    # Builds a model in milliseconds, in process (no export): its columns try the smallest case for availability.
    cheap: bool = False

    @property
    def family(self) -> str:
        return f"onnx-{self.name}"

    def availability(self) -> Availability:
        """Whether this source can make models here (onnx itself is checked by the column)."""
        return Availability.ok()

    def refusals(self, case: Case) -> tuple[Refusal, ...]:
        """What this source declares, without trying, it can't make a model for (see `StaticCapabilities`)."""
        return ()

    def gru_layout(self, case: Case) -> int:
        """The `layout` attribute of the GRU nodes its model has for `case` (runtimes may refuse layout 1)."""
        return 0

    def prepare(self, cases: list[Case]) -> None:  # noqa: B027  (an optional hook: most sources build on demand)
        """Build every model these cases need before the first `prepared` (exports, in parallel)."""

    @abstractmethod
    def prepared(self, case: Case, weights: Weights) -> Prepared:
        """The model for `case` with `weights` bound; `UnsupportedCase` quoting the source's refusal."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """The source's notes for the report (versions, how models are made)."""

    def cached_facts(self) -> list[dict[str, Any]]:
        """Facts of models made by earlier runs (the report asks before anything ran)."""
        return []

    def plan(self, cases: list[Case]) -> list[Build]:
        """The models these cases need that take building ahead (exports), cached or not; none by default."""
        return []

    def recorded(self) -> list[Build]:
        """The models this source has cached, with what making each took (the plan's estimates)."""
        return []
