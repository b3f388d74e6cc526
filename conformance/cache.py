"""Where the suite keeps what it built and measured: `$GRU_CONFORMANCE_CACHE`, else `<repo>/.cache` (git-ignored).

One root for every cache, so one variable moves them all: ONNX exports (`onnx/`), JAX
programs and XLA's compilation cache (`jax/`), and the timings the plan estimates from
(`timings/`).
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "GRU_CONFORMANCE_CACHE"
REPO = Path(__file__).resolve().parents[1]


def cache_root() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else REPO / ".cache"
