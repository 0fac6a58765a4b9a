"""Short thread titles: a small model call for real providers, the first words offline."""

from __future__ import annotations

import logging
import re
from typing import Literal, Protocol

from openai import AsyncOpenAI

logger = logging.getLogger(__name__)

MAX_TITLE_CHARS = 60
MAX_TITLE_WORDS = 6
TITLE_INSTRUCTIONS = (
    "Write a title of at most six words for a conversation that starts with the user's message "
    "below. Answer with the title only: no quotes, no final punctuation."
)


class TitleMaker(Protocol):
    """Turns the first user message of a thread into a short title."""

    async def title_for(self, text: str) -> str: ...


def first_words_title(text: str) -> str:
    """The first few words of the message, trimmed to a title's length."""
    words = text.split()
    title = " ".join(words[:MAX_TITLE_WORDS])
    if len(words) > MAX_TITLE_WORDS or len(title) > MAX_TITLE_CHARS:
        title = title[: MAX_TITLE_CHARS - 1].rstrip() + "…"
    return title or "New conversation"


def _clean(raw: str) -> str:
    title = re.sub(r"\s+", " ", raw).strip().strip("\"'`*#").strip()
    title = title.rstrip(".!?;:")
    return title[:MAX_TITLE_CHARS].rstrip()


class FirstWordsTitles:
    """Titles without a model call (the offline provider, or THREAD_TITLES=first_words)."""

    async def title_for(self, text: str) -> str:
        return first_words_title(text)


class ModelTitles:
    """Asks the configured model for a title; falls back to the first words on any failure."""

    def __init__(
        self,
        client: AsyncOpenAI,
        *,
        model: str,
        api: Literal["responses", "chat_completions"],
    ) -> None:
        self._client = client
        self._model = model
        self._api = api

    async def title_for(self, text: str) -> str:
        excerpt = text[:2000]
        try:
            if self._api == "responses":
                response = await self._client.responses.create(
                    model=self._model,
                    instructions=TITLE_INSTRUCTIONS,
                    input=excerpt,
                    max_output_tokens=24,
                    store=False,
                )
                raw = response.output_text
            else:
                completion = await self._client.chat.completions.create(
                    model=self._model,
                    messages=[
                        {"role": "system", "content": TITLE_INSTRUCTIONS},
                        {"role": "user", "content": excerpt},
                    ],
                    max_tokens=24,
                )
                raw = completion.choices[0].message.content or ""
        except Exception as exc:
            logger.info("title.model_failed", extra={"error": type(exc).__name__})
            return first_words_title(text)
        return _clean(raw) or first_words_title(text)
