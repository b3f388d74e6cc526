"""Backend-name patterns. Names hold brackets (`torch[cpu]`), so fnmatch's `[...]`
classes would misread them: here only `*` and `?` are wildcards."""

from __future__ import annotations

import re
from functools import lru_cache


@lru_cache(maxsize=256)
def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(re.escape(pattern).replace(r"\*", ".*").replace(r"\?", "."))


def matches(name: str, pattern: str) -> bool:
    return _compile(pattern).fullmatch(name) is not None
