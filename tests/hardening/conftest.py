"""A Postgres cluster of the package's own, for tests that stop, restart or lock it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pg_cluster import PostgresCluster, start_cluster


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[PostgresCluster]:
    """A cluster the tests of one module may stop and restart (never the session's)."""
    cluster = start_cluster()
    yield cluster
    cluster.destroy()
