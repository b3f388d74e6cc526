"""The case: an immutable description of one GRU check, and its readable id.

A case id encodes every field, so `--case ID` can rebuild the case anywhere,
independent of which tier produced it. That is what makes a failure's rerun
command exact.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from typing import Any, Literal

Lengths = Literal["dense", "sorted", "unsorted", "full", "zero"]
DType = Literal["float32", "float64", "float16", "bfloat16"]
ExportShape = Literal["same", "other", "degenerate"]

LENGTHS: tuple[str, ...] = ("dense", "sorted", "unsorted", "full", "zero")
DTYPES: tuple[str, ...] = ("float32", "float64", "float16", "bfloat16")
EXPORT_SHAPES: tuple[str, ...] = ("same", "other", "degenerate")
# The fixed trace shape of `other` (batch, seq_len), independent of the run shape so one export serves
# every run shape; `OTHER_ALTERNATE` when a case runs at OTHER_DIMS itself. Neither is a matrix value.
OTHER_DIMS = (4, 7)
OTHER_ALTERNATE = (5, 8)
DEGENERATE_DIMS = (1, 1)

# Bounds on one case, so a `--case` id or a matrix value can't ask for unbounded work. The oracle and
# the error-gain measurement (conformance/tolerance.py) step through every step of every layer and
# direction in Python, about 0.7 ms a step on a laptop core, and every tensor is held several times
# in float64. The matrix's largest case is 260 steps x 3 layers x 2 directions = 1560.
MAX_SEQUENTIAL_STEPS = 20_000  # seq_len x num_layers x num_directions: about 15 s of reference work
MAX_ELEMENTS = 10_000_000  # of the largest tensor (x, output, a weight matrix): 80 MB in float64


class CaseError(ValueError):
    """A case description that cannot exist (bad id, impossible combination)."""


@dataclass(frozen=True, order=True)
class Case:
    """One GRU configuration plus the seed of its data.

    `lengths` names the kind of batch: `dense` (no packing), `sorted` and
    `unsorted` (packed, with a length of 1 and a length of seq_len among the
    items; `unsorted` means `enforce_sorted=False`), and `full` (packed, every
    length equal to seq_len), and `zero` (packed and unsorted, with one item of
    length 0: what comes back for it is a policy question, see `conformance.oracle`).
    The per-item lengths themselves are data, drawn from the seed (see
    `conformance.data`).

    `export_shape` matters to backends that trace or compile at one shape, and says
    where the model is traced: `same` at the run shape; `other` at one fixed shape
    (`OTHER_DIMS`, batch 4 and seq_len 7), whatever the run shape, so a single export
    serves every run shape; `degenerate` at batch 1 and seq_len 1, where exporters are
    known to specialise silently (a model traced at seq_len 1 that returns seq_len 1 when
    run at 5). Eager backends ignore it.
    """

    input_size: int
    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    batch_first: bool = False
    bias: bool = True
    batch: int = 2
    seq_len: int = 5
    lengths: str = "dense"
    initial_state: bool = False
    dtype: str = "float32"
    export_shape: str = "same"
    seed: int = 0

    def __post_init__(self) -> None:
        problem = self.impossibility()
        if problem:
            raise CaseError(f"impossible case {self.id}: {problem}")

    def impossibility(self) -> str | None:
        """Why this combination cannot exist, or None. Kept next to the fields it constrains."""
        for name in ("input_size", "hidden_size", "num_layers", "batch", "seq_len"):
            if getattr(self, name) < 1:
                return f"{name} must be >= 1"
        if self.lengths not in LENGTHS:
            return f"lengths must be one of {', '.join(LENGTHS)}"
        if self.dtype not in DTYPES:
            return f"dtype must be one of {', '.join(DTYPES)}"
        if self.export_shape not in EXPORT_SHAPES:
            return f"export_shape must be one of {', '.join(EXPORT_SHAPES)}"
        if self.lengths in ("sorted", "unsorted") and (self.batch < 2 or self.seq_len < 2):
            return f"'{self.lengths}' lengths need two different lengths: batch >= 2 and seq_len >= 2"
        if self.lengths == "zero" and self.batch < 2:
            return "'zero' lengths need an item of length 0 beside one that runs: batch >= 2"
        return None

    def excess(self) -> str | None:
        """Why this case is too large to check (see MAX_SEQUENTIAL_STEPS and MAX_ELEMENTS), or None.

        Apart from `impossibility`: an oversized case exists (results that hold one still load),
        it is only refused up front, before any work starts.
        """
        steps = self.seq_len * self.num_layers * self.num_directions
        if steps > MAX_SEQUENTIAL_STEPS:
            return (
                f"seq_len {self.seq_len} x {self.num_layers} layer(s) x {self.num_directions} direction(s) = "
                f"{steps} sequential steps, over the bound of {MAX_SEQUENTIAL_STEPS} (conformance.case.MAX_SEQUENTIAL_STEPS)"
            )
        units = self.hidden_size * self.num_directions
        sizes = {
            "x": self.seq_len * self.batch * self.input_size,
            "output": self.seq_len * self.batch * units,
            "weight_ih": 3 * self.hidden_size * max(self.input_size, units if self.num_layers > 1 else 0),
            "weight_hh": 3 * self.hidden_size * self.hidden_size,
        }
        name, size = max(sizes.items(), key=lambda item: item[1])
        if size > MAX_ELEMENTS:
            return (
                f"{name} would hold {size} elements, over the bound of {MAX_ELEMENTS} (conformance.case.MAX_ELEMENTS)"
            )
        return None

    @property
    def packed(self) -> bool:
        return self.lengths != "dense"

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def enforce_sorted(self) -> bool:
        return self.lengths not in ("unsorted", "zero")

    @property
    def export_dims(self) -> tuple[int, int]:
        """(batch, seq_len) at which a tracing backend builds its model for this case."""
        if self.export_shape == "same":
            return self.batch, self.seq_len
        if self.export_shape == "degenerate":
            return DEGENERATE_DIMS
        return OTHER_DIMS if (self.batch, self.seq_len) != OTHER_DIMS else OTHER_ALTERNATE

    @property
    def structure(self) -> tuple[Any, ...]:
        """The fields that fix a compiled or exported model: everything but data and run shape."""
        return (
            self.input_size,
            self.hidden_size,
            self.num_layers,
            self.bidirectional,
            self.batch_first,
            self.bias,
            self.lengths != "dense",
            self.initial_state,
            self.dtype,
        )

    @cached_property  # asked millions of times while a covering tier is planned
    def id(self) -> str:
        return "-".join(
            [
                f"I{self.input_size}H{self.hidden_size}",
                f"L{self.num_layers}",
                "bi" if self.bidirectional else "uni",
                "bf" if self.batch_first else "tm",
                "bias" if self.bias else "nobias",
                "h0" if self.initial_state else "noh0",
                f"B{self.batch}T{self.seq_len}",
                self.lengths,
                self.dtype,
                f"x{self.export_shape}",
                f"s{self.seed}",
            ]
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Case:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known - {"id"}
        if unknown:
            raise CaseError(f"unknown case field(s): {', '.join(sorted(unknown))}")
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_id(cls, case_id: str) -> Case:
        match = _ID_PATTERN.fullmatch(case_id)
        if not match:
            raise CaseError(
                f"not a case id: {case_id!r}; expected the form I4H8-L2-bi-bf-nobias-h0-B3T7-unsorted-float32-xsame-s0"
            )
        g = match.groupdict()
        return cls(
            input_size=int(g["i"]),
            hidden_size=int(g["h"]),
            num_layers=int(g["layers"]),
            bidirectional=g["dir"] == "bi",
            batch_first=g["layout"] == "bf",
            bias=g["bias"] == "bias",
            initial_state=g["h0"] == "h0",
            batch=int(g["batch"]),
            seq_len=int(g["seq"]),
            lengths=g["lengths"],
            dtype=g["dtype"],
            export_shape=g["export"],
            seed=int(g["seed"]),
        )


_ID_PATTERN = re.compile(
    r"I(?P<i>\d+)H(?P<h>\d+)-L(?P<layers>\d+)-(?P<dir>uni|bi)-(?P<layout>tm|bf)"
    r"-(?P<bias>bias|nobias)-(?P<h0>h0|noh0)-B(?P<batch>\d+)T(?P<seq>\d+)"
    r"-(?P<lengths>dense|sorted|unsorted|full|zero)-(?P<dtype>float32|float64|float16|bfloat16)"
    r"-x(?P<export>same|other|degenerate)-s(?P<seed>\d+)"
)
