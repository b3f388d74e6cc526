"""The test tiers hold: a test that starts the suite in a subprocess without the e2e mark fails, saying so.

Every marked test that uses the `suite` fixture is the passing counterpart.
"""

from __future__ import annotations

import pytest
from conftest import require_mark


def test_an_unmarked_suite_run_is_refused(request: pytest.FixtureRequest) -> None:
    with pytest.raises(pytest.fail.Exception, match=r"test_tiers.py::.* runs it: mark it @pytest.mark.e2e"):
        require_mark(request.node, "e2e", "runs it")
