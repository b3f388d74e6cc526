"""The in-memory bound on what a run keeps of what it built (`conformance.cache.Lru`)."""

from __future__ import annotations

from conformance.cache import Budget, Lru


def test_lru_keeps_the_most_recently_used_entries() -> None:
    lru: Lru[str, int] = Lru(2)
    lru["a"], lru["b"] = 1, 2
    assert lru["a"] == 1  # a is now the most recent
    lru["c"] = 3
    assert set(lru) == {"a", "c"}  # b, the least recent, went
    assert lru.get("b") is None and lru.get("a") == 1
    lru["d"] = 4
    assert set(lru) == {"a", "d"}  # get refreshed a too


def test_a_budget_caps_several_caches_together_least_recently_used_first() -> None:
    """Two caches, each far below its own size, share a budget of 5 units: a backward-like entry weighs 3."""
    budget = Budget(5)
    forward: Lru[str, int] = Lru(100, budget, weight=1)
    backward: Lru[str, int] = Lru(100, budget, weight=3)
    forward["a"], forward["b"] = 1, 2
    backward["x"] = 10  # 5 units: full
    assert (list(forward), list(backward), budget.used) == (["a", "b"], ["x"], 5)
    assert forward.get("a") == 1  # "a" is now the most recent forward entry; "b" the least recent of all
    forward["c"] = 3  # 6 units: the least recently used of both caches goes
    assert (list(forward), list(backward), budget.used) == (["a", "c"], ["x"], 5)
    backward["y"] = 20  # 8 units: "x" goes
    assert (list(forward), list(backward), budget.used) == (["a", "c"], ["y"], 5)
    forward["d"] = 4  # 6 units: "a" goes
    assert (list(forward), list(backward), budget.used) == (["c", "d"], ["y"], 5)


def test_an_entry_heavier_than_the_budget_is_kept_alone_and_own_size_evictions_release_the_budget() -> None:
    budget = Budget(2)
    heavy: Lru[str, int] = Lru(100, budget, weight=5)
    heavy["big"] = 1
    assert list(heavy) == ["big"] and heavy["big"] == 1  # the entry just used is never the one dropped
    small: Lru[str, int] = Lru(1, budget)  # its own size is 1
    small["p"] = 1
    assert list(heavy) == [] and budget.used == 1
    small["q"] = 2  # its own eviction of "p" gives the budget back its unit
    assert list(small) == ["q"] and budget.used == 1
