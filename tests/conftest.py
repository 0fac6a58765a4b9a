"""Hooks of the whole suite; its shared fixtures live in plugin modules registered below.

The fixtures are registered only where tests run: `make test`'s controller process runs none,
and importing them (the app, the SDKs, the harness) would cost it ~4 s before any worker starts.
"""

from __future__ import annotations

import importlib
import sys
import uuid
from typing import Any

import pytest

from tests import xdist_groups

FIXTURE_PLUGINS = ("tests.database_fixtures", "tests.server_fixtures")


# `make test` runs `pytest -n 2 --dist loadgroup`; tests/xdist_groups.py decides which tests
# share a worker.
def pytest_configure(config: pytest.Config) -> None:
    xdist_groups.announce_file(config)
    if xdist_groups.is_controller(config):
        return
    for name in FIXTURE_PLUGINS:
        config.pluginmanager.register(importlib.import_module(name), name)
    from tests import database_fixtures  # imported just above

    database_fixtures.start_early()


# After the session's fixtures are gone, before an xdist worker reports that it has finished
# (its controller may then end it): the cluster goes even when no test asked for it.
@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    database_fixtures = sys.modules.get("tests.database_fixtures")
    if database_fixtures is not None:
        database_fixtures.database.destroy()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    xdist_groups.record_groups(items)


@pytest.hookimpl(optionalhook=True)  # absent under `-p no:xdist`
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    return xdist_groups.make_scheduler(config, log)


@pytest.fixture
def new_user_id() -> str:
    """A user id no other test uses: tests share one database and stay apart by user."""
    return f"user-{uuid.uuid4().hex}"
