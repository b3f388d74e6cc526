"""Precision diagnosis: is a failure the size of computing in a coarser format than the case asks for?

A semantic mistake (a swapped gate, a dropped bias) moves outputs by a fraction of
their size whatever the format; computing a float64 case in float32, or a float32 case
in bfloat16, moves them by that format's unit roundoff times how much the case amplifies
rounding. So the oracle's recurrence is run again with every stored value rounded to a
candidate format (`conformance.forms.Arithmetic`: inputs, weights, every matmul result
and every elementwise result), and a failure is named after the format whose emulated
error (max abs vs the oracle, over the positions the comparison uses) is within FACTOR
of the backend's, the nearest in ratio when several are.

Only magnitude is compared, on purpose. Two computations in one format round
independently, so a genuine low-precision backend is usually farther from the emulation
than from the oracle: over the smoke and pairwise tiers (float64 cases computed in float32,
float32 and float64 cases computed in bfloat16; `tests/planted_mistakes.py`), max |actual -
emulation| / max |actual - oracle| has a median of 1.06 (float32) and 1.43 (bfloat16), below
1 in only 38% and 21% of cases, so "closer to the emulation than to the oracle" would reject
most real precision problems. What separates precision from semantics is scale: a format's
error is its unit roundoff times the case's gain, neighbouring candidates are 8x (float16 vs
bfloat16) to 8192x (float32 vs tf32) apart, and semantic mistakes typically move outputs by 0.01 to 1.
tf32-matmul and float16 share a unit roundoff (2**-11), so they often both
fit; the match lists every format that fits. A semantic variant that reproduces the
result (`conformance.variants.diagnose`) is the better explanation where both exist.

tf32-matmul stands for float32 arithmetic whose matmul operands are rounded to TF32's
11 significant bits (a GPU's default for float32 matmuls).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from conformance.case import Case
from conformance.data import GruOutput, Inputs, Weights
from conformance.dtypes import TF32_MANTISSA_BITS, fmt
from conformance.forms import Arithmetic, Form, gru, round_to_bits, round_to_format
from conformance.variants import distance

# "Within a factor of a few": the error of one format on one case varies between implementations
# (operation order, which intermediates are stored, fused or split matmuls). Measured on the same
# cases, observed / emulated error: 0.45 to 2.1 (median 1.1) for float32, 0.16 to 1.9 (median 0.74)
# for bfloat16; the one case below 1/4 (hidden_size 1, five steps) is named float16 instead.
FACTOR = 4.0

# Candidates from finest to coarsest, with their unit roundoff.
CANDIDATES: dict[str, tuple[Arithmetic, float]] = {
    "float32": (Arithmetic("float32", store=round_to_format("float32")), fmt("float32").unit_roundoff),
    "tf32-matmul": (
        Arithmetic("tf32-matmul", store=round_to_format("float32"), operand=round_to_bits(TF32_MANTISSA_BITS + 1)),
        2.0 ** -(TF32_MANTISSA_BITS + 1),
    ),
    "float16": (Arithmetic("float16", store=round_to_format("float16")), fmt("float16").unit_roundoff),
    "bfloat16": (Arithmetic("bfloat16", store=round_to_format("bfloat16")), fmt("bfloat16").unit_roundoff),
}


@dataclass(frozen=True)
class PrecisionMatch:
    """The format named, the backend's error and the emulation's (max abs vs the oracle, same positions).

    `also_consistent` lists the other candidate formats within FACTOR (nearest first): the
    error's size alone can't tell them apart.
    """

    format: str
    observed_error: float
    emulated_error: float
    also_consistent: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["also_consistent"] = list(self.also_consistent)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrecisionMatch:
        return cls(**{**data, "also_consistent": tuple(data.get("also_consistent", ()))})

    def describe(self) -> str:
        line = (
            f"consistent with computing in {self.format}: error {self.observed_error:.3g}, "
            f"the oracle computed in {self.format} is off by {self.emulated_error:.3g}"
        )
        if self.also_consistent:
            line += f" (the error's size also fits {', '.join(self.also_consistent)})"
        return line


def candidates(case: Case) -> list[str]:
    """Formats coarser than the case dtype, finest first."""
    own = fmt(case.dtype).unit_roundoff
    return [name for name, (_, unit) in CANDIDATES.items() if unit > own]


def emulate(case: Case, weights: Weights, inputs: Inputs, format: str) -> GruOutput:
    """The oracle with every stored value rounded to `format` (a key of CANDIDATES)."""
    return gru(case, weights, inputs, Form(arithmetic=CANDIDATES[format][0]))


def diagnose_precision(
    case: Case, weights: Weights, inputs: Inputs, actual: GruOutput, tolerance: float, expected: GruOutput
) -> PrecisionMatch | None:
    """The coarser format whose rounding explains a failure, or None (passing, or no format's error fits)."""
    lengths = inputs.lengths
    observed = distance(case, lengths, actual, expected)
    if not (tolerance < observed < math.inf):
        return None
    fits: list[tuple[float, str, float]] = []
    for name in candidates(case):
        emulated = distance(case, lengths, emulate(case, weights, inputs, name), expected)
        if emulated > 0.0 and 1 / FACTOR <= observed / emulated <= FACTOR:
            fits.append((abs(math.log(observed / emulated)), name, emulated))
    if not fits:
        return None
    fits.sort()
    _, name, emulated = fits[0]
    return PrecisionMatch(name, observed, emulated, tuple(other for _, other, _ in fits[1:]))
