"""Where the suite keeps what it built and measured: `$GRU_CONFORMANCE_CACHE`, else `<repo>/.cache` (git-ignored).

One root for every cache, so one variable moves them all: ONNX exports (`onnx/`), JAX
programs and XLA's compilation cache (`jax/`), and the timings the plan estimates from
(`timings/`).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, TypeVar

CACHE_ENV = "GRU_CONFORMANCE_CACHE"
REPO = Path(__file__).resolve().parents[1]
IN_MEMORY = 512  # built models or programs a backend keeps in memory (see `Lru`)
K = TypeVar("K")
V = TypeVar("V")


def cache_root() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else REPO / ".cache"


class Lru(OrderedDict[K, V]):
    """A dict that keeps its `size` most recently used entries: what a run holds in memory of what it built.

    The full tier's shard needs thousands of models and programs; each is cheap to load again
    from its on-disk cache, and all of them at once would not fit in a runner's memory.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self._lock = threading.RLock()  # builds finish in threads (export pool, stored programs)

    def __getitem__(self, key: K) -> V:
        with self._lock:
            value = super().__getitem__(key)
            self.move_to_end(key)
            return value

    def get(self, key: K, default: Any = None) -> Any:  # type: ignore[override]
        with self._lock:
            if key not in self:
                return default
            return self[key]  # refreshes it

    def __setitem__(self, key: K, value: V) -> None:
        with self._lock:
            super().__setitem__(key, value)
            self.move_to_end(key)
            while len(self) > self.size:
                self.popitem(last=False)
