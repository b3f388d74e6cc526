"""The in-memory bound on what a run keeps of what it built (`conformance.cache.Lru`)."""

from __future__ import annotations

from conformance.cache import Lru


def test_lru_keeps_the_most_recently_used_entries() -> None:
    lru: Lru[str, int] = Lru(2)
    lru["a"], lru["b"] = 1, 2
    assert lru["a"] == 1  # a is now the most recent
    lru["c"] = 3
    assert set(lru) == {"a", "c"}  # b, the least recent, went
    assert lru.get("b") is None and lru.get("a") == 1
    lru["d"] = 4
    assert set(lru) == {"a", "d"}  # get refreshed a too
