"""Which tests share a pytest-xdist worker, for `make test`'s `-n 2`.

A test that uses a module-, class- or package-scoped fixture (a server) runs on its module's or
package's worker, so that fixture starts once; any other test goes to whichever worker is free.
The browser and Node suites share one group, so two of them never run at once on two cores.

Why not just `xdist_group` markers with `--dist loadgroup`: xdist 3.8 tells the controller a
test's group by renaming the test (`item._nodeid`), which pytest 9 no longer reads (its node ids
live in `_id`), so the markers grouped nothing and module servers started on both workers. Here
each worker writes the groups it computed to a file; the controller's scheduler reads them.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from xdist.scheduler import LoadScopeScheduling

_FILE_ENV = "TESTS_XDIST_GROUPS_FILE"
# Tests whose xdist_group is the same run on one worker, one after another.
_ONE_AT_A_TIME = ("tests/browser/", "tests/examples/")
# A module's fake model (`fake`) is only a channel of the worker's fake server: free to repeat.
_FREE_TO_REPEAT = frozenset({"fake"})


def group_of(item: pytest.Item) -> str:
    """The group `item` belongs to: its marker's, else one decided by its fixtures' scopes."""
    marker = item.get_closest_marker("xdist_group")
    if marker is not None:
        return str(marker.args[0] if marker.args else marker.kwargs.get("name", "default"))
    module = item.nodeid.split("::", 1)[0]
    if module.startswith(_ONE_AT_A_TIME):
        return "browser-and-node"
    fixture_info = getattr(item, "_fixtureinfo", None)
    scopes = {
        definitions[-1].scope
        for name, definitions in (fixture_info.name2fixturedefs.items() if fixture_info else ())
        if definitions and name not in _FREE_TO_REPEAT
    }
    if "package" in scopes:
        return module.rsplit("/", 1)[0]
    if scopes & {"module", "class"}:
        return module
    return item.nodeid


def is_controller(config: pytest.Config) -> bool:
    """True in the process that only hands tests to `-n` workers (it runs none itself)."""
    return bool(getattr(config.option, "numprocesses", None)) and not os.environ.get(
        "PYTEST_XDIST_WORKER"
    )


def announce_file(config: pytest.Config) -> None:
    """In the controller, before workers start: where they write their groups."""
    if not is_controller(config):
        return
    os.environ[_FILE_ENV] = str(Path(tempfile.mkdtemp(prefix="xdist-groups-")) / "groups")


def record_groups(items: list[pytest.Item]) -> None:
    """In a worker, after collection: write {node id: group} for the controller."""
    worker, target = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get(_FILE_ENV)
    if not worker or not target:
        return
    partial = Path(f"{target}.{worker}.partial")
    partial.write_text(json.dumps({item.nodeid: group_of(item) for item in items}))
    partial.replace(f"{target}.{worker}")


class GroupScheduling(LoadScopeScheduling):  # type: ignore[misc]  # xdist is untyped
    """LoadScopeScheduling whose scope of a test is the group its worker recorded."""

    _groups: dict[str, str] | None = None

    def _split_scope(self, nodeid: str) -> str:
        if self._groups is None:
            self._groups = {}
            target = os.environ.get(_FILE_ENV)
            if target:
                for path in Path(target).parent.glob(Path(target).name + ".gw*"):
                    if path.suffix != ".partial":
                        self._groups.update(json.loads(path.read_text()))
        return self._groups.get(nodeid) or nodeid.split("::", 1)[0]


def make_scheduler(config: pytest.Config, log: Any) -> GroupScheduling | None:
    return GroupScheduling(config, log) if config.getvalue("dist") == "loadgroup" else None
