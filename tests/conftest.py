"""Fixtures every test directory sees: a local SparkSession for the transform tests (no
services), the shared test stack (tests/shared_stack.py), the guard that keeps ``CINESTREAM_*``
from leaking between tests, and which tests must share a pytest-xdist worker."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

# One registration of the shared stack's fixtures for tests/integration and tests/dags: a second
# (a conftest importing them again) would be a second session-scoped stack.
from tests.shared_stack import SPARK_SUBMIT_OPTS, pipeline, stack, warm_driver  # noqa: F401
from tests.spark_cds import C1_ONLY

# Every Spark driver a test starts compiles with C1 only and maps Spark's classes from an archive
# (tests/shared_stack.py says why).
os.environ.setdefault("SPARK_SUBMIT_OPTS", SPARK_SUBMIT_OPTS)
# So does every Kafka broker and HDFS daemon the test stacks start (the compose brokers' test
# passes it on as KAFKA_OPTS): a broker took 7.8-9.2 CPU-seconds to start and 3.2-3.4 per idle
# minute with the default tiers, 5.3 and 2.5 with C1 only (2026-12-02, this machine), and `make
# test` runs ten brokers on two cores.
os.environ.setdefault("CINESTREAM_DAEMON_JVM_OPTS", C1_ONLY)

# Airflow is imported by some unit tests; keep its home out of the user's ~/airflow.
os.environ.setdefault(
    "AIRFLOW_HOME",
    str(os.path.join(os.path.dirname(__file__), "..", ".state-test", "airflow-unit")),
)


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    from pyspark.sql import SparkSession

    from cinestream.stream.submit import python_env

    for key, value in python_env().items():
        os.environ.setdefault(key, value)

    session = (
        SparkSession.builder.master("local[2]")
        .appName("cinestream-tests")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.log.structuredLogging.enabled", "false")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


# --------------------------------------------------------------------------------------------
# No CINESTREAM_* variable leaks out of a test or a module
# --------------------------------------------------------------------------------------------
# Every subprocess a test starts (the CLI, spark-submit, airflow) inherits os.environ, so a
# leaked CINESTREAM_* setting changes what later tests run (a leaked CINESTREAM_FIRST_START
# once turned the live stack's catch-up into days of backfills). Session fixtures are the one
# owner allowed to keep a change for the whole run (``stack`` sets BASE_ENV and restores it at
# the end): the keys they change while being set up are recorded here, and a guard ignores the
# ones recorded after it took its snapshot.
_SESSION_OWNED: list[str] = []


def _cinestream_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("CINESTREAM_")}


def _changed(before: dict[str, str], after: dict[str, str], ignore: set[str]) -> dict[str, Any]:
    """``key: (before, after)`` for every key whose value differs (None: unset)."""
    return {
        k: (before.get(k), after.get(k))
        for k in sorted(before.keys() | after.keys())
        if before.get(k) != after.get(k) and k not in ignore
    }


class _SessionEnvOwners:
    """Records the CINESTREAM_* keys each session fixture changes while it is set up. A plugin
    of its own: a session fixture is set up on the session's node (the rootdir), which the hooks
    of this conftest (tests/) are not called for."""

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(
        self, fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
    ) -> Any:
        if fixturedef.scope != "session":
            return (yield)
        before = _cinestream_env()
        try:
            return (yield)
        finally:
            _SESSION_OWNED.extend(_changed(before, _cinestream_env(), set()))


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_SessionEnvOwners(), "cinestream-session-env-owners")


def _guard(what: str) -> Iterator[None]:
    before = _cinestream_env()
    owned_from = len(_SESSION_OWNED)
    yield
    leaked = _changed(before, _cinestream_env(), set(_SESSION_OWNED[owned_from:]))
    # Put them back first: one leak is reported once, not again by every later test.
    for key, (value, _) in leaked.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    assert not leaked, (
        f"{what} left CINESTREAM_* changed in os.environ (key: (before, after)): {leaked}; "
        "set them with monkeypatch (pytest.MonkeyPatch.context() in a module fixture), which "
        "restores them"
    )


@pytest.fixture(autouse=True)
def _cinestream_env_unchanged_by_the_test() -> Iterator[None]:
    """Fails a test that, or whose function fixtures, leave a CINESTREAM_* variable changed.
    Its snapshot is taken after the session and module fixtures are set up (pytest sets up
    wider scopes first) and compared before they are torn down."""
    yield from _guard("this test or one of its function-scoped fixtures")


@pytest.fixture(scope="module", autouse=True)
def _cinestream_env_unchanged_by_the_module() -> Iterator[None]:
    """Fails the module's last test when a module-scoped fixture left a CINESTREAM_* variable
    changed after its teardown (set up before them, torn down after them)."""
    yield from _guard("a module-scoped fixture of this module")


# --------------------------------------------------------------------------------------------
# Which tests must share a worker under pytest-xdist
# --------------------------------------------------------------------------------------------
# `make test` runs the service tiers on three workers (`-n 3 --dist loadgroup`), each worker with
# its own shared stack (tests/shared_stack.py: slot N + K for worker gwK). The tests that start a
# whole stack of their own through `up` (the cluster profile, the live platform, the compose
# brokers) run on one worker, one stack after the other: started side by side on two cores (load
# average 20+) Airflow answered its tasks too late and `up --cluster` failed in two runs of
# 2026-12-02. The DAG tests stay together on one worker (one `airflow db migrate` per shared
# stack); every other test is scheduled alone, wherever a worker is free.
_GROUPS = {
    "tests/cluster/": "own-stacks",
    "tests/dags/test_live_platform.py": "own-stacks",
    "tests/dags/": "airflow",
}


def xdist_group(relpath: str) -> str | None:
    """The worker group of a test file (a path relative to the repository), None: any worker."""
    for prefix, group in _GROUPS.items():
        if relpath == prefix or (prefix.endswith("/") and relpath.startswith(prefix)):
            return group
    return None


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadgroup` with the groups above, by path. (xdist 3.8's own loadgroup reads
    ``xdist_group`` marks into a nodeid suffix that pytest 9.2's ``Item.nodeid`` no longer
    carries, so marked tests were spread over every worker.) Scopes run largest first."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class PathGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group(nodeid.split("::", 1)[0]) or nodeid

    return PathGroups(config, log)
