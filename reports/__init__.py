"""The HTML compatibility report: `render(results, output)` or `python -m reports render RESULTS... -o PAGE`.

Importing this package is cheap; jinja2 and matplotlib load only when a page is rendered.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reports.render import Rendered


def render(results: list[Path], output: Path, **options: Any) -> Rendered:
    """See `reports.render.render`; imported lazily so `import reports` stays light."""
    from reports.render import render as _render

    return _render(results, output, **options)
