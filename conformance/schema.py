"""Input files are written by strangers: one way to read them, one way to say what is wrong with them.

Every file the suite reads (the matrix, the divergence registry, a vectors manifest, results
records, a `--compare` summary) is checked against what it must hold before anything uses it.
A problem reads `FILE: ENTRY: FIELD: expected X, got Y`, so a hand edit that went wrong points
at itself, instead of surfacing later as a traceback or, worse, as a wrong verdict (a registry
entry whose `backends` is a string matches every backend and hides every failure).

Each file type keeps its own schema in the module that owns the file; this module holds only
the shared vocabulary. No numerical imports: the records layer and the reports use it.
"""

from __future__ import annotations

import json
import stat
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar


class SchemaError(ValueError):
    """An input file that doesn't hold what it must; the message names the file, the entry and the field."""


E = TypeVar("E", bound=SchemaError)
T = TypeVar("T")


def describe(value: Any) -> str:
    """A wrong value as the message shows it: the value (shortened) and what kind of thing it is."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, int):
        return f"{value} (an integer)"
    if isinstance(value, float):
        return f"{value!r} (a number)"
    if isinstance(value, str):
        return f"{_short(repr(value))} (a string)"
    if isinstance(value, Mapping):
        keys = ", ".join(sorted(str(k) for k in value))
        return f"a table with keys {_short(keys)}" if value else "an empty table"
    if isinstance(value, list | tuple):
        return f"a list {_short(repr(list(value)))}" if value else "an empty list"
    return f"{_short(repr(value))} (a {type(value).__name__})"


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class Where:
    """A place in an input file: the file, and the entry in it (e.g. `[[divergence]] #2 (id 'x')`).

    `error` is the exception type the owning module raises (MatrixError, RegistryError, ...),
    so callers keep catching what they caught before.
    """

    file: str
    entry: str = ""
    error: type[SchemaError] = SchemaError

    def at(self, entry: str) -> Where:
        return Where(self.file, f"{self.entry}: {entry}" if self.entry else entry, self.error)

    def message(self, text: str, field: str = "") -> str:
        return ": ".join(part for part in (self.file, self.entry, field, text) if part)

    def fail(self, text: str, field: str = "") -> SchemaError:
        """A free-form problem at this place (raise the result)."""
        return self.error(self.message(text, field))

    def expected(self, field: str, expected: str, got: Any) -> SchemaError:
        """The usual problem: `FIELD: expected X, got Y` (raise the result)."""
        return self.fail(f"expected {expected}, got {describe(got)}", field)


def check_keys(where: Where, data: Mapping[str, Any], allowed: Iterable[str], required: Iterable[str] = ()) -> None:
    """Unknown keys are refused (a misspelt key would otherwise be ignored silently); required ones must be there."""
    valid = sorted(allowed)
    unknown = sorted(str(k) for k in data if k not in valid)
    if unknown:
        raise where.fail(f"unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(valid)}")
    missing = [k for k in required if k not in data]
    if missing:
        raise where.fail(f"missing key(s) {', '.join(missing)}")


def table(where: Where, value: Any, field: str, expected: str = "a table") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise where.expected(field, expected, value)
    return value


def text(where: Where, value: Any, field: str, expected: str = "a non-empty string") -> str:
    if not isinstance(value, str) or not value.strip():
        raise where.expected(field, expected, value)
    return value


def integer(where: Where, value: Any, field: str, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise where.expected(field, f"an integer{bound}", value)
    return value


def number(where: Where, value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise where.expected(field, "a number", value)
    return float(value)


def list_of(
    where: Where,
    value: Any,
    field: str,
    item: Callable[[Where, Any, str], T],
    expected: str,
    nonempty: bool = True,
) -> list[T]:
    """A list whose items each pass `item`; a lone value where a list belongs is refused, never iterated."""
    if not isinstance(value, list) or (nonempty and not value):
        raise where.expected(field, expected, value)
    return [item(where, v, f"{field}[{i}]") for i, v in enumerate(value)]


def one_of(where: Where, value: Any, field: str, choices: Iterable[Any]) -> Any:
    options = list(choices)
    if value not in options or type(value) not in {type(o) for o in options}:
        raise where.expected(field, "one of " + ", ".join(repr(o) for o in options), value)
    return value


MAX_TEXT_BYTES = 256 * 2**20  # far above any matrix, registry or summary this suite writes


def regular_file(path: Path, what: str, error: type[SchemaError] = SchemaError) -> int:
    """The size of a regular file; missing, a directory or a device (`/dev/zero` would be read forever) is an error."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except OSError as problem:
        raise error(f"{path}: can't read this {what}: {problem.strerror or problem}") from None
    if stat.S_ISDIR(info.st_mode):
        raise error(f"{path}: is a directory, not a {what}")
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{path}: not a regular file; expected a {what}")
    return info.st_size


def read_text(path: Path, what: str, error: type[SchemaError] = SchemaError, limit: int = MAX_TEXT_BYTES) -> str:
    """A file's text; missing, a directory, a device, too large, unreadable or not UTF-8 is an error naming it."""
    size = regular_file(path, what, error)
    if size > limit:
        raise error(f"{path}: {size} bytes, more than a {what} can be ({limit})")
    try:
        with path.open("rb") as handle:
            blob = handle.read(limit + 1)
    except OSError as problem:
        raise error(f"{path}: can't read this {what}: {problem.strerror or problem}") from None
    try:
        return blob.decode("utf-8")
    except UnicodeDecodeError as problem:
        raise error(
            f"{path}: not a text file (byte 0x{problem.object[problem.start]:02x} at offset {problem.start} is not "
            f"UTF-8); expected a {what}"
        ) from None


def read_toml(path: Path, what: str, error: type[SchemaError] = SchemaError) -> dict[str, Any]:
    text = read_text(path, what, error)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as problem:
        raise error(f"{path}: not valid TOML: {problem}") from None


def read_json(path: Path, what: str, error: type[SchemaError] = SchemaError, damaged: str = "") -> Any:
    text = read_text(path, what, error)
    try:
        return json.loads(text)
    except json.JSONDecodeError as problem:
        raise error(f"{path}: not valid JSON ({problem}){damaged}") from None


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (through symlinks, `..` and hard links), existing or not."""
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return False


def clobbers(outputs: Sequence[tuple[str, Path | None]], inputs: Sequence[tuple[str, Path | None]]) -> list[str]:
    """Every output that would overwrite an input or another output: `LABEL PATH is also LABEL`.

    Paths come labelled the way the user gave them (`--report`, `-o`, `a results file`), so the
    message says which two options collide. A None path (option not given) is skipped.
    """
    problems = []
    named_outputs = [(label, path) for label, path in outputs if path is not None]
    named_inputs = [(label, path) for label, path in inputs if path is not None]
    for number, (label, path) in enumerate(named_outputs):
        for other, existing in named_inputs + named_outputs[:number]:
            if same_file(path, existing):
                problems.append(f"{label} {path} is also {other}: writing it would destroy it")
                break
    return problems
