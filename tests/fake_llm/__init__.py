"""A fake OpenAI-compatible model server speaking the real wire protocol, for end-to-end tests.

with FakeLLM() as fake:
    fake.enqueue(Reply.tool_call("add", {"a": 2, "b": 3}), Reply.text("5"))
    model = OpenAIResponsesModel(model="gpt-4o-mini", openai_client=fake.client())
"""

from tests.fake_llm.recorded import ApiKind, RecordedRequest
from tests.fake_llm.script import Faults, Reply, Responder, TimingFaults, ToolCall, echo_responder
from tests.fake_llm.server import API_KEY, FakeLLM

__all__ = [
    "API_KEY",
    "ApiKind",
    "FakeLLM",
    "Faults",
    "RecordedRequest",
    "Reply",
    "Responder",
    "TimingFaults",
    "ToolCall",
    "echo_responder",
]
