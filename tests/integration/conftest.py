"""tests/integration runs on the shared test stack: its ``stack`` and ``pipeline`` fixtures are
registered once, by tests/conftest.py, for tests/integration and tests/dags alike.

The names below stay importable from here (``from tests.integration.conftest import Pipeline``);
they live in tests/shared_stack.py, with the CINESTREAM_TEST_SLOT logic (own state dir and
ports per slot) at its top. Do not import the fixtures here: a second registration is a second
session-scoped stack.
"""

from __future__ import annotations

from tests.shared_stack import BASE_ENV, REPO, TEST_STATE, Pipeline, assert_windows_equal

__all__ = ["BASE_ENV", "REPO", "TEST_STATE", "Pipeline", "assert_windows_equal"]
