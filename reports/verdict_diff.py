"""Which (backend, case, quantity) verdicts changed between two runs: the check behind "don't move what works".

`python -m reports verdicts OLD.jsonl NEW.jsonl` lists every (backend, case, quantity) whose verdict
differs, appeared or disappeared, and exits 1 if there is any, so a refactor can prove it moved
nothing. `--quantity forward` (or backward) compares that quantity alone: a run from before the
backward check against one with it, say. A record without a quantity is forward.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from conformance.records import FORWARD, ORACLE_CHECK, RESULT, check_of, read_records

Key = tuple[str, str, str]  # (backend, case id, quantity)


def verdicts(paths: Iterable[Path], quantity: str | None = None) -> dict[Key, str]:
    """(backend, case id, quantity) -> verdict over these results files, of one quantity if given; a key
    seen with two verdicts reads 'a|b'."""
    seen: dict[Key, set[str]] = {}
    for path in paths:
        for record in read_records(path):
            if record["kind"] != RESULT:
                continue
            check = check_of(record)  # an invariant's result is its own pair: "<case id> invariant:<name>"
            case = record["case_id"] if check == ORACLE_CHECK else f"{record['case_id']} {check}"
            key = (record["backend"], case, record.get("quantity", FORWARD))
            if quantity is None or key[2] == quantity:
                seen.setdefault(key, set()).add(record["verdict"])
    return {key: "|".join(sorted(values)) for key, values in seen.items()}


def changes(old: dict[Key, str], new: dict[Key, str]) -> list[str]:
    """One line per changed key, sorted: `backend  case  quantity  old -> new` (`-` for absent)."""
    lines = []
    for key in sorted(old.keys() | new.keys()):
        before, after = old.get(key, "-"), new.get(key, "-")
        if before != after:
            lines.append(f"{key[0]}  {key[1]}  {key[2]}  {before} -> {after}")
    return lines
