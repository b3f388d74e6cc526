"""Distribution: `-n 2` (pytest-xdist) gives a serial run's verdicts in one file; `--shard i/n` partitions a tier."""

from __future__ import annotations

import json
import random
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from conformance import matrix, sharding
from conformance.case import Case

pytest.importorskip("xdist")


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _verdicts(records: list[dict[str, Any]]) -> set[tuple[str, str, str, str]]:
    """(kind, backend(s), case id, verdict) of every result and cross-device record."""
    return {
        (r["kind"], r.get("backend") or "~".join(r["backends"]), r["case_id"], r["verdict"])
        for r in records
        if r["kind"] in ("result", "cross_device")
    }


@pytest.mark.e2e
def test_two_workers_give_the_serial_verdicts_in_one_file(suite: Any, tmp_path: Path) -> None:
    # torch[cpu] plus a torch[cuda] computing on the CPU, so cross-device records travel too.
    args = ("--tier", "smoke", "--backends", "torch[*]", "--backend-module", "test_devices:fake_cuda_torch")
    serial = suite(*args, "--results", str(tmp_path / "serial" / "results.jsonl"))
    parallel = suite(*args, "-n", "2", "--results", str(tmp_path / "xdist" / "results.jsonl"))
    assert serial.returncode == 0, serial.stdout[-3000:] + serial.stderr[-3000:]
    assert parallel.returncode == 0, parallel.stdout[-3000:] + parallel.stderr[-3000:]

    one, two = _records(tmp_path / "serial" / "results.jsonl"), _records(tmp_path / "xdist" / "results.jsonl")
    assert _verdicts(two) == _verdicts(one)
    cases = len(matrix.cases("smoke")) + len(matrix.zero_length())  # every tier adds the zero-length cases
    assert len([r for r in two if r["kind"] == "result"]) == 2 * cases  # nothing lost, nothing twice
    assert len([r for r in two if r["kind"] == "cross_device"]) == cases
    # One combined file: one run, one environment and one end record, the workers' files merged away.
    assert len({r["run_id"] for r in two}) == 1
    assert [r["kind"] for r in two].count("environment") == 1 and two[-1]["kind"] == "end"
    assert {r["worker"] for r in two if r["kind"] == "result"} == {"gw0", "gw1"}  # really distributed
    assert sorted(p.name for p in (tmp_path / "xdist").iterdir()) == ["results.jsonl"]
    # torch refuses a length of 0 (pack_padded_sequence): the zero-length cases are unsupported on both columns
    zero = len(matrix.zero_length())
    assert two[-1]["counts"] == {"pass": 2 * (cases - zero), "unsupported": 2 * zero}


# -- sharding ------------------------------------------------------------------------------


@cache
def tier_cases(tier: str) -> tuple[Case, ...]:
    return tuple(matrix.cases(tier))


def assert_partition(tier: list[Case], shards: list[list[Case]]) -> None:
    """Every case of the tier in exactly one shard."""
    ids = [c.id for shard in shards for c in shard]
    assert len(ids) == len(set(ids)), "a case runs in two shards"
    assert set(ids) == {c.id for c in tier}, "a case runs in no shard"


def by_index(cases: list[Case], shard: sharding.Shard) -> list[Case]:
    """The rejected alternative: deal the tier out in its generated order."""
    return [c for i, c in enumerate(cases) if i % shard.count == shard.index - 1]


@pytest.mark.parametrize("tier", matrix.TIERS)
@pytest.mark.parametrize("count", [1, 2, 3, 4, 7])
def test_shards_partition_the_tier_evenly(tier: str, count: int) -> None:
    cases = list(tier_cases(tier))
    shards = [sharding.select(cases, sharding.Shard(i, count)) for i in range(1, count + 1)]
    assert_partition(cases, shards)
    sizes = [len(s) for s in shards]
    largest_group = max(Counter(sharding.build_group(c) for c in cases).values())
    assert max(sizes) - min(sizes) <= largest_group, sizes  # whole build groups are dealt, so within one group
    for shard in shards:  # each shard keeps the tier's own order
        members = set(shard)
        assert shard == [c for c in cases if c in members]


@pytest.mark.parametrize("tier", ["triples", "full"])
def test_a_build_group_never_spans_two_shards(tier: str) -> None:
    """Cases that share exports and compiled programs land together: no two machines build the same model."""
    cases = list(tier_cases(tier))
    owner = {c.id: i for i in range(1, 9) for c in sharding.select(cases, sharding.Shard(i, 8))}
    single = sharding.assign((c.id for c in cases), 8)  # the counterpart: single cases dealt, as before groups
    grouped: dict[str, set[int]] = {}
    dealt: dict[str, set[int]] = {}
    for case in cases:
        grouped.setdefault(sharding.build_group(case), set()).add(owner[case.id])
        dealt.setdefault(sharding.build_group(case), set()).add(single[case.id])
    assert all(len(s) == 1 for s in grouped.values())
    assert tier != "full" or sum(len(s) > 1 for s in dealt.values()) > len(dealt) // 2  # ...which split most


def test_shard_membership_ignores_the_generated_order() -> None:
    """Machines that generate the tier in different orders still agree on every shard."""
    cases = list(tier_cases("pairwise"))
    shuffled = random.Random(7).sample(cases, len(cases))
    for i in (1, 2, 3):
        shard = sharding.Shard(i, 3)
        assert {c.id for c in sharding.select(shuffled, shard)} == {c.id for c in sharding.select(cases, shard)}
    # The counterpart: dealing by index partitions nothing once two machines' orders differ.
    mixed = [by_index(cases, sharding.Shard(1, 3)), by_index(shuffled, sharding.Shard(2, 3))]
    mixed.append(by_index(cases, sharding.Shard(3, 3)))
    with pytest.raises(AssertionError):
        assert_partition(cases, mixed)


@pytest.mark.e2e
def test_suite_shards_collect_disjoint_parts_of_the_tier(suite: Any) -> None:
    """Through the real plugin: the shards' collected tests are the tier's, each exactly once."""

    def collected(shard: str) -> list[str]:
        run = suite("--collect-only", "-q", "--tier", "pairwise", "--backends", "torch[cpu]", "--shard", shard)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        prefix = "conformance/test_gru.py::test_gru[torch[cpu]-"
        return [line.removeprefix(prefix)[:-1] for line in run.stdout.splitlines() if line.startswith(prefix)]

    parts = [collected(f"{i}/2") for i in (1, 2)]
    assert all(parts)
    ids = [case_id for part in parts for case_id in part]
    tier = [*tier_cases("pairwise"), *matrix.zero_length()]  # the tier's cases and the zero-length ones
    assert sorted(ids) == sorted(c.id for c in tier)  # union = tier, no case twice


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0/2", "between 1 and 2"),
        ("3/2", "between 1 and 2"),
        ("1/0", "at least 1"),
        ("2", "the form i/n"),
        ("a/b", "the form i/n"),
        ("-1/2", "the form i/n"),
        ("", "the form i/n"),
    ],
)
def test_bad_shard_values_say_what_is_valid(text: str, message: str) -> None:
    with pytest.raises(sharding.ShardError, match=message):
        sharding.parse(text)


def test_good_shard_values_parse() -> None:
    assert sharding.parse("2/4") == sharding.Shard(2, 4) and str(sharding.parse(" 1 / 1 ")) == "1/1"


@pytest.mark.e2e
@pytest.mark.parametrize("value", ["3/2", "x"])
def test_bad_shard_is_a_usage_error(suite: Any, value: str) -> None:
    run = suite("--tier", "smoke", "--backends", "torch[cpu]", "--shard", value)
    assert run.returncode == 4, run.stdout[-2000:] + run.stderr[-2000:]
    assert f"--shard {value!r}" in run.stderr
