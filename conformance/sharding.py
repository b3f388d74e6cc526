"""Deterministic shards of a tier for many machines: `--shard i/n` (1-based, as Playwright and Jest write it).

How a case finds its shard: the cases are ranked by SHA-256 of their id, and dealt out
round-robin in that rank (rank k goes to shard k mod n + 1). Why this and not the
simpler alternatives:

* by index in the tier's generated order: balanced, but only a partition if every machine
  generates the tier in the same order. An order change (a covertable or Python upgrade on
  one runner, a set iterated in hash order) would run some cases twice and others never,
  silently. Ranking by a hash of the id depends on the *set* of cases only.
* by `hash(id) mod n` alone: order-free too, but shard sizes then vary by chance
  (binomially: about ±sqrt(N/n)), so one shard is the long pole of the CI run.

The rank-then-deal scheme is order-free and keeps shard sizes within one case of each
other. Python's own `hash` is salted per process, so it would not do; SHA-256 is stable
everywhere.

What is dealt is a *build group*, not a single case: the cases that share builds (one
`Case.structure` and sorting variant: its ONNX exports at the fixed trace shapes, its JAX
programs at each run shape) go to one shard together, so no two machines build the same
model. Groups are ranked by the SHA-256 of their key and each goes, in rank order, to the
shard with the fewest cases so far; shard sizes then stay within one group (at most a few
dozen cases in the full tier) of each other. Where every case is its own group (the small
tiers), that is the round-robin deal above.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from conformance.case import Case

_FORM = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


class ShardError(ValueError):
    """A `--shard` value that isn't `i/n` with 1 <= i <= n."""


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse(text: str) -> Shard:
    """`"2/4"` -> Shard(2, 4); anything else raises ShardError saying what is valid."""
    match = _FORM.match(text)
    if not match:
        raise ShardError(f"--shard {text!r}: expected the form i/n, e.g. 1/4 (shards are numbered from 1)")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1:
        raise ShardError(f"--shard {text!r}: the number of shards must be at least 1")
    if not 1 <= index <= count:
        raise ShardError(f"--shard {text!r}: the shard number must be between 1 and {count}")
    return Shard(index, count)


def rank_key(case_id: str) -> bytes:
    """The stable, salt-free sort key of a case id."""
    return hashlib.sha256(case_id.encode("utf-8")).digest()


def assign(case_ids: Iterable[str], count: int) -> dict[str, int]:
    """case id -> its shard number (1..count), for the whole tier at once (every case its own group)."""
    ranked = sorted(set(case_ids), key=lambda case_id: (rank_key(case_id), case_id))
    return {case_id: rank % count + 1 for rank, case_id in enumerate(ranked)}


def build_group(case: Case) -> str:
    """The key of the cases that share builds: structure and sorting variant (not run or trace shape, not seed)."""
    return repr((case.structure, case.enforce_sorted))


def assign_groups(groups: dict[str, set[str]], count: int) -> dict[str, int]:
    """case id -> shard number: whole groups, in SHA-256 rank of their key, each to the smallest shard so far."""
    sizes = [0] * count
    owner: dict[str, int] = {}
    for key in sorted(groups, key=lambda key: (rank_key(key), key)):
        index = min(range(count), key=lambda i: (sizes[i], i))
        sizes[index] += len(groups[key])
        owner.update(dict.fromkeys(groups[key], index + 1))
    return owner


def owners(cases: Iterable[Case], count: int) -> dict[str, int]:
    """case id -> shard number (1..count), build groups kept whole: what every sharded list of cases (or of
    tests, by their case) should be cut with, so that no two shards build the same export or program."""
    groups: dict[str, set[str]] = {}
    for case in cases:
        groups.setdefault(build_group(case), set()).add(case.id)
    return assign_groups(groups, count)


def select(cases: list[Case], shard: Shard | None) -> list[Case]:
    """The cases of one shard, in the tier's own order (None = every case)."""
    if shard is None or shard.count == 1:
        return list(cases)
    owner = owners(cases, shard.count)
    return [case for case in cases if owner[case.id] == shard.index]
