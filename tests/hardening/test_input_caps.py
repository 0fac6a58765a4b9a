"""Every field of a message counts toward the caps (issue 9, item 8).

About 900 KB fits under the body cap (1 MiB) but far exceeds MAX_MESSAGE_CHARS (32,000): hidden
in a tag's data or id, in the inference options or the quoted text, it must be refused before
anything is stored, or it is saved and resent to the model as history on every later turn.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx2
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.shared_secret import SharedSecretVerifier
from tests.e2e.harness import InProcessServer, text_input
from tests.security.checks import assert_json_error, count_rows

BULK = 900_000


def tag(**fields: Any) -> dict[str, Any]:
    return {
        "type": "input_tag",
        "id": "t1",
        "text": "groceries",
        "data": {},
        "interactive": False,
        **fields,
    }


def message(*, parts: list[dict[str, Any]] | None = None, **fields: Any) -> dict[str, Any]:
    user_input = text_input("hello")
    if parts is not None:
        user_input["content"] = [{"type": "input_text", "text": "hello"}, *parts]
    return {**user_input, **fields}


OVERSIZED = {
    "tag_data": message(parts=[tag(data={"notes": "d" * BULK})]),
    "tag_data_many_keys": message(parts=[tag(data={f"k{i}": "v" * 90 for i in range(9000)})]),
    "tag_id": message(parts=[tag(id="i" * BULK)]),
    "tag_group": message(parts=[tag(group="g" * BULK)]),
    "tag_text": message(parts=[tag(text="x" * BULK)]),
    "many_tags": message(parts=[tag(data={"n": "y" * 9000}) for _ in range(100)]),
    "model": message(inference_options={"model": "m" * BULK}),
    "tool_choice": message(inference_options={"tool_choice": {"id": "c" * BULK}}),
    "quoted_text": message(quoted_text="q" * BULK),
}


@pytest.fixture
def user(offline_server: InProcessServer, minter: SharedSecretVerifier) -> tuple[str, str]:
    user_id = f"user-caps-{uuid.uuid4().hex}"
    return user_id, minter.mint(user_id)


async def post(base_url: str, token: str, op: str, params: dict[str, Any]) -> httpx2.Response:
    body = json.dumps({"type": op, "params": params}).encode()
    assert len(body) < 1_048_576, len(body)  # under the body cap: only the message cap applies
    async with httpx2.AsyncClient(base_url=base_url, timeout=60) as http:
        return await http.post(
            "/api/chatkit",
            content=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )


@pytest.mark.parametrize("case", sorted(OVERSIZED))
async def test_oversized_fields_are_refused_and_nothing_is_stored(
    case: str, offline_server: InProcessServer, user: tuple[str, str], pg_engine: AsyncEngine
) -> None:
    user_id, token = user
    first = await post(
        offline_server.base_url, token, "threads.create", {"input": text_input("first")}
    )
    assert first.status_code == 200
    thread_id = next(
        json.loads(line[6:])["thread"]["id"]
        for line in first.text.splitlines()
        if line.startswith("data: ") and '"thread.created"' in line
    )
    before = await count_rows(pg_engine, user_id)

    for op, params in (
        ("threads.create", {"input": OVERSIZED[case]}),
        ("threads.add_user_message", {"thread_id": thread_id, "input": OVERSIZED[case]}),
    ):
        response = await post(offline_server.base_url, token, op, params)
        body = assert_json_error(response, (400, 413))
        assert "32000" in body["message"], body

    assert await count_rows(pg_engine, user_id) == before


async def test_a_tag_with_some_data_is_still_accepted(
    offline_server: InProcessServer, user: tuple[str, str]
) -> None:
    _, token = user
    tagged = message(
        parts=[tag(data={"notes": "n" * 2000}, group="lists")],
        inference_options={"model": "gpt-4o-mini"},  # OPENAI_MODEL: the one model listed
        quoted_text="an earlier answer",
    )
    response = await post(offline_server.base_url, token, "threads.create", {"input": tagged})
    assert response.status_code == 200, response.text
    assert '"type":"error"' not in response.text
