"""The private SDK seams we use are pinned: leaving the tested range fails here first."""

from __future__ import annotations

import inspect
import tomllib
from importlib.metadata import version
from pathlib import Path

from chatkit.server import ChatKitServer
from packaging.requirements import Requirement
from packaging.version import Version

from app.chat.sdk_seams import TESTED_CHATKIT_VERSIONS

PYPROJECT = Path(__file__).resolve().parents[3] / "pyproject.toml"


def test_installed_chatkit_is_in_the_tested_range() -> None:
    installed = Version(version("openai-chatkit"))
    spec = Requirement("openai-chatkit" + ",".join(TESTED_CHATKIT_VERSIONS)).specifier
    assert installed in spec, f"openai-chatkit {installed} is outside {spec}: re-check sdk_seams"


def test_pyproject_pins_the_same_range() -> None:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    chatkit = [Requirement(d) for d in dependencies if d.startswith("openai-chatkit")]
    assert len(chatkit) == 1
    assert (
        chatkit[0].specifier
        == Requirement("openai-chatkit" + ",".join(TESTED_CHATKIT_VERSIONS)).specifier
    )


def test_the_private_dispatchers_still_have_the_shape_we_call() -> None:
    for name in ("_process_streaming", "_process_non_streaming"):
        method = getattr(ChatKitServer, name)
        assert list(inspect.signature(method).parameters) == ["self", "request", "context"]
