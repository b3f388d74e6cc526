"""Floating-point formats the matrix declares, by name, with their precision.

bfloat16 comes from `ml_dtypes` (numpy has none); it is the same type jax uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np


@dataclass(frozen=True)
class Format:
    name: str
    numpy: np.dtype
    mantissa_bits: int  # explicit fraction bits (the implicit leading 1 not counted)

    @property
    def unit_roundoff(self) -> float:
        """u = 2**-(p) with p = mantissa_bits + 1: the worst relative error of one rounding."""
        return 2.0 ** -(self.mantissa_bits + 1)

    @property
    def eps(self) -> float:
        """Spacing of numbers in [1, 2): one ULP at 1.0."""
        return 2.0**-self.mantissa_bits

    @property
    def tiny(self) -> float:
        return float(ml_dtypes.finfo(self.numpy).tiny)


FORMATS: dict[str, Format] = {
    "float64": Format("float64", np.dtype(np.float64), 52),
    "float32": Format("float32", np.dtype(np.float32), 23),
    "float16": Format("float16", np.dtype(np.float16), 10),
    "bfloat16": Format("bfloat16", np.dtype(ml_dtypes.bfloat16), 7),
}

# TF32 keeps float32's range with a 10-bit mantissa; used to derive the
# `--precision default` tolerance for GPU matmuls.
TF32_MANTISSA_BITS = 10


def fmt(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; known: {', '.join(FORMATS)}") from None


def name_of(dtype: np.dtype) -> str:
    for name, f in FORMATS.items():
        if f.numpy == dtype:
            return name
    return str(dtype)


def quantize(values: np.ndarray, name: str) -> np.ndarray:
    """Round float64 values to the named format (returned in that format)."""
    return np.asarray(values, dtype=np.float64).astype(fmt(name).numpy)


def ulp(values: np.ndarray, name: str) -> np.ndarray:
    """Spacing of the named format at each value (float64), subnormals included."""
    f = fmt(name)
    mag = np.maximum(np.abs(np.asarray(values, dtype=np.float64)), f.tiny)
    return np.ldexp(1.0, np.floor(np.log2(mag)).astype(np.int64) - f.mantissa_bits)
