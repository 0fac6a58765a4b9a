"""Provider choice, tracing and the offline model's commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from agents import OpenAIChatCompletionsModel, OpenAIResponsesModel

from app.agent.offline_model import OfflineDemoModel, describe_tool_result, parse_command
from app.agent.provider import build_model
from app.agent.titles import FirstWordsTitles, ModelTitles, first_words_title
from app.chat.server import ChatServer
from app.settings import Settings
from app.store.chatkit_store import SqlStore
from app.store.database import create_engine


def settings(tmp_path: Path, **values: Any) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path, **values)


async def test_offline_without_openai_settings(tmp_path: Path) -> None:
    choice = build_model(settings(tmp_path))
    assert choice.provider == "offline" and isinstance(choice.model, OfflineDemoModel)
    assert choice.client is None and isinstance(choice.titles, FirstWordsTitles)


@pytest.mark.parametrize(
    ("api", "model_type"),
    [("responses", OpenAIResponsesModel), ("chat_completions", OpenAIChatCompletionsModel)],
)
async def test_openai_when_a_base_url_or_key_is_set(
    tmp_path: Path, api: str, model_type: type
) -> None:
    choice = build_model(
        settings(
            tmp_path, openai_base_url="http://127.0.0.1:9/v1", openai_api=api, openai_timeout=7
        )
    )
    try:
        assert choice.provider == "openai" and isinstance(choice.model, model_type)
        assert choice.client is not None and choice.client.max_retries == 2
        assert choice.client.timeout == 7
        # By default a title costs no model request (issue 10): the first words.
        assert isinstance(choice.titles, FirstWordsTitles)
    finally:
        await choice.aclose()
    titled = build_model(
        settings(tmp_path, openai_base_url="http://127.0.0.1:9/v1", thread_titles="model")
    )
    assert isinstance(titled.titles, ModelTitles)
    await titled.aclose()
    keyed = build_model(settings(tmp_path, openai_api_key="sk-test", thread_titles="off"))
    assert keyed.provider == "openai" and keyed.titles is None
    await keyed.aclose()


@pytest.mark.parametrize("enabled", [False, True])
async def test_tracing_is_off_unless_enabled(tmp_path: Path, enabled: bool) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 't.db'}")
    server = ChatServer(
        store=SqlStore(engine),
        model=OfflineDemoModel(),
        mcp=None,
        history_limit=5,
        tracing=enabled,
    )
    assert server._run_config.tracing_disabled is (not enabled)
    await engine.dispose()


@pytest.mark.parametrize(
    ("text", "tool", "arguments"),
    [
        ("add task buy milk", "add_task", {"title": "buy milk"}),
        ("Add a task: call mom", "add_task", {"title": "call mom"}),
        ("list tasks", "list_tasks", {"status": "all"}),
        ("show my open tasks", "list_tasks", {"status": "open"}),
        ("complete task 3", "complete_task", {"task_id": 3}),
        ("update task #4 to buy oat milk", "update_task", {"task_id": 4, "title": "buy oat milk"}),
        ("delete task 9", "delete_task", {"task_id": 9}),
    ],
)
def test_offline_commands(text: str, tool: str, arguments: dict[str, object]) -> None:
    command = parse_command(text)
    assert command is not None and command.name == tool and command.arguments == arguments


def test_other_text_is_not_a_command() -> None:
    assert parse_command("hello there") is None
    assert parse_command("delete task abc") is None


def test_tool_results_read_as_sentences() -> None:
    listed = (
        '[{"type": "input_text", "text": "{\\"tasks\\": [{\\"id\\": 2, \\"title\\": \\"x\\"}]}"}]'
    )
    assert describe_tool_result("list_tasks", listed) == "Your tasks:\n- [ ] #2 x"
    assert describe_tool_result("list_tasks", '{"tasks": []}') == "You have no tasks."
    added = '{"id": 5, "title": "y", "completed": false}'
    assert describe_tool_result("add_task", added) == "Added task [ ] #5 y."


def test_first_words_title() -> None:
    assert first_words_title("plan the trip") == "plan the trip"
    assert first_words_title("one two three four five six seven") == "one two three four five six…"
    assert first_words_title("   ") == "New conversation"
