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


class Budget:
    """A cap on the entries of several `Lru`s together, the least recently used going first.

    Why: some things a backend keeps cost a per-process resource no single cache sees. A compiled
    XLA program on the CPU holds tens to hundreds of memory maps, and the kernel caps a process's
    maps (`vm.max_map_count`, 65530 by default): the JAX backends together, each keeping its own
    forward and backward programs, crossed it on a cold triples run, and LLVM's allocations then
    failed and the process crashed. A `Budget` shared by their caches bounds them all at once.
    """

    def __init__(self, size: float) -> None:
        self.size = size
        self.used = 0.0
        self._order: OrderedDict[tuple[int, Any], tuple[Lru[Any, Any], float]] = OrderedDict()
        self._lock = threading.Lock()

    def touch(self, owner: Lru[Any, Any], key: Any) -> None:
        """`owner[key]` was just used or added; drop the least recently used entries beyond the cap (never the
        entry just touched)."""
        victims = []
        with self._lock:
            if (id(owner), key) not in self._order:
                self._order[(id(owner), key)] = (owner, owner.weight)
                self.used += owner.weight
            self._order.move_to_end((id(owner), key))
            while self.used > self.size and len(self._order) > 1:
                (_, old), (cache, weight) = self._order.popitem(last=False)
                self.used -= weight
                victims.append((cache, old))
        for cache, old in victims:  # outside the budget's lock: each cache takes its own
            cache.drop(old)

    def forget(self, owner: Lru[Any, Any], key: Any) -> None:
        with self._lock:
            found = self._order.pop((id(owner), key), None)
            if found is not None:
                self.used -= found[1]


class Lru(OrderedDict[K, V]):
    """A dict that keeps its `size` most recently used entries: what a run holds in memory of what it built.

    The full tier's shard needs thousands of models and programs; each is cheap to load again
    from its on-disk cache, and all of them at once would not fit in a runner's memory. With a
    `budget`, the entries also count against a cap shared with other caches.
    """

    def __init__(self, size: int, budget: Budget | None = None, weight: float = 1.0) -> None:
        super().__init__()
        self.size = size
        self.budget = budget
        self.weight = weight  # what each entry counts against the budget
        self._lock = threading.RLock()  # builds finish in threads (export pool, stored programs)

    def __getitem__(self, key: K) -> V:
        with self._lock:
            value = super().__getitem__(key)
            self.move_to_end(key)
        if self.budget is not None:
            self.budget.touch(self, key)
        return value

    def get(self, key: K, default: Any = None) -> Any:  # type: ignore[override]
        with self._lock:
            if key not in self:
                return default
        try:
            return self[key]  # refreshes it
        except KeyError:  # dropped by the budget in between
            return default

    def __setitem__(self, key: K, value: V) -> None:
        evicted = []
        with self._lock:
            super().__setitem__(key, value)
            self.move_to_end(key)
            while len(self) > self.size:
                evicted.append(self.popitem(last=False)[0])
        if self.budget is not None:
            for old in evicted:
                self.budget.forget(self, old)
            self.budget.touch(self, key)

    def drop(self, key: K) -> None:
        """Remove `key` if present (the budget's eviction)."""
        with self._lock:
            if key in self:
                super().__delitem__(key)
