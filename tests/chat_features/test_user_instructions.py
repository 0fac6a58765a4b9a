"""Instructions that know the user: date, name claim, browser language, operator guidance."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.auth.shared_secret import SharedSecretVerifier
from tests.chat_features.conftest import (
    OPERATOR_GUIDANCE,
    stream_with_headers,
    tag_input,
    text_part,
)
from tests.e2e.harness import InProcessServer
from tests.fake_llm import FakeLLM, Reply
from tests.server_fixtures import SECRET, ClientFactory


def today_iso() -> set[str]:
    now = datetime.now(UTC)
    # A turn that crosses midnight may see either day.
    return {now.date().isoformat(), (now - timedelta(minutes=5)).date().isoformat()}


async def test_instructions_carry_date_name_language_and_guidance(
    features_server: InProcessServer, fake: FakeLLM, make_client: ClientFactory
) -> None:
    client = make_client(features_server.base_url)
    client.token = SharedSecretVerifier(SECRET).mint(
        "user-ada", name="Ada\nLovelace", email="ada@example.com", nickname="countess"
    )
    fake.enqueue(Reply.text("Bonjour Ada."))
    result = await stream_with_headers(
        client,
        "threads.create",
        {"input": tag_input(text_part("salut, qui suis-je ?"))},
        {"Accept-Language": "fr-CH, fr;q=0.9, en;q=0.8"},
    )
    assert result.assistant_text() == "Bonjour Ada."
    instructions = fake.model_requests()[0].instructions or ""
    assert any(day in instructions for day in today_iso())
    assert '"Ada Lovelace"' in instructions
    assert "answer in French" in instructions
    assert OPERATOR_GUIDANCE in instructions
    # Only the name claim; no other claim, no user text, never the token.
    for absent in ("ada@example.com", "countess", "salut", client.token, "user-ada"):
        assert absent not in instructions


async def test_without_name_or_language_only_the_date_is_added(
    features_server: InProcessServer, fake: FakeLLM, make_client: ClientFactory
) -> None:
    client = make_client(features_server.base_url)
    fake.enqueue(Reply.text("Hi."))
    await client.send("hi")
    instructions = fake.model_requests()[0].instructions or ""
    assert any(day in instructions for day in today_iso())
    assert "display name" not in instructions and "prefers" not in instructions
