"""Which (backend, case) verdicts changed between two runs: the check behind "don't move what works".

`python -m reports verdicts OLD.jsonl NEW.jsonl` lists every (backend, case) whose verdict differs,
appeared or disappeared, and exits 1 if there is any, so a refactor can prove it moved nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from conformance.records import ORACLE_CHECK, RESULT, check_of, read_records

Key = tuple[str, str]  # (backend, case id)


def verdicts(paths: Iterable[Path]) -> dict[Key, str]:
    """(backend, case id) -> verdict over these results files; a pair seen with two verdicts reads 'a|b'."""
    seen: dict[Key, set[str]] = {}
    for path in paths:
        for record in read_records(path):
            if record["kind"] == RESULT:
                check = check_of(record)  # an invariant's result is its own pair: "<case id> invariant:<name>"
                case = record["case_id"] if check == ORACLE_CHECK else f"{record['case_id']} {check}"
                seen.setdefault((record["backend"], case), set()).add(record["verdict"])
    return {key: "|".join(sorted(values)) for key, values in seen.items()}


def changes(old: dict[Key, str], new: dict[Key, str]) -> list[str]:
    """One line per changed pair, sorted: `backend  case  old -> new` (`-` for absent)."""
    lines = []
    for key in sorted(old.keys() | new.keys()):
        before, after = old.get(key, "-"), new.get(key, "-")
        if before != after:
            lines.append(f"{key[0]}  {key[1]}  {before} -> {after}")
    return lines
