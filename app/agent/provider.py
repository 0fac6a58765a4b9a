"""The model behind the agent: OpenAI (Responses or Chat Completions) or the offline demo model."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agents import Model, OpenAIChatCompletionsModel, OpenAIResponsesModel
from openai import AsyncOpenAI, DefaultAsyncHttpxClient

from app.agent.offline_model import OFFLINE_MODEL_NAME, OfflineDemoModel
from app.agent.openai_seams import LeanAsyncOpenAI, lean_openai_supported
from app.agent.titles import FirstWordsTitles, ModelTitles, TitleMaker
from app.net import connection_limits, outbound_transport
from app.settings import Settings

logger = logging.getLogger(__name__)

MODEL_CONNECTION_LIMITS = connection_limits(max_connections=1000, max_keepalive_connections=100)


@dataclass(frozen=True, slots=True)
class ModelChoice:
    """The model used for every turn, with the client it owns (None offline)."""

    model: Model
    provider: str
    name: str
    api: str
    client: AsyncOpenAI | None
    titles: TitleMaker | None

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.close()

    def named(self, name: str) -> Model:
        """A model of this provider and API running `name`, on the same client."""
        if self.client is None:
            return self.model  # the offline model answers the same under any name
        if self.api == "chat_completions":
            return OpenAIChatCompletionsModel(model=name, openai_client=self.client)
        return OpenAIResponsesModel(model=name, openai_client=self.client)


class ModelCatalog:
    """The models users may pick for a turn, each built once per process and then reused."""

    def __init__(
        self,
        choice: ModelChoice,
        *,
        allowed: Sequence[str],
        wrap: Callable[[Model, str], Model] | None = None,
    ) -> None:
        self._choice = choice
        self.allowed = tuple(allowed)
        self._wrap = wrap
        self._models: dict[str, Model] = {}

    def model_for(self, name: str) -> Model | None:
        """The model for an allowed `name`, None for any other name."""
        if name not in self.allowed:
            return None
        model = self._models.get(name)
        if model is None:
            model = self._choice.named(name)
            if self._wrap is not None:
                model = self._wrap(model, name)
            self._models[name] = model
        return model


def build_model(settings: Settings) -> ModelChoice:
    """Pick the provider from the settings; the openai client's retries are the only retry layer."""
    if settings.model_provider == "offline":
        offline_titles = None if settings.thread_titles == "off" else FirstWordsTitles()
        return ModelChoice(
            OfflineDemoModel(), "offline", OFFLINE_MODEL_NAME, "offline", None, offline_titles
        )
    api_key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
    # The same client with less CPU per streamed answer, when openai is a version we checked.
    client_class = LeanAsyncOpenAI if lean_openai_supported() else AsyncOpenAI
    client = client_class(
        # Local and proxy servers often need no key, but the client insists on one.
        api_key=api_key or "not-configured",
        base_url=settings.openai_base_url,
        timeout=settings.openai_timeout,
        max_retries=settings.openai_max_retries,
        # Many turns stream at once: keep openai's own generous pool limits.
        http_client=DefaultAsyncHttpxClient(
            transport=outbound_transport(limits=MODEL_CONNECTION_LIMITS)
        ),
    )
    model: Model
    if settings.openai_api == "chat_completions":
        model = OpenAIChatCompletionsModel(model=settings.openai_model, openai_client=client)
    else:
        model = OpenAIResponsesModel(model=settings.openai_model, openai_client=client)
    titles: TitleMaker | None = None
    if settings.thread_titles == "model":
        titles = ModelTitles(client, model=settings.openai_model, api=settings.openai_api)
    elif settings.thread_titles == "first_words":
        titles = FirstWordsTitles()
    return ModelChoice(model, "openai", settings.openai_model, settings.openai_api, client, titles)
