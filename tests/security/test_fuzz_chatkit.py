"""Property-based fuzzing of POST /api/chatkit on an in-process app over Postgres.

Properties, for ChatKit-shaped bodies (every op, fields drawn from own, foreign, unknown and
random ids, hostile text and wrong types, keys missing or extra), random JSON and random bytes:
never a 5xx; a 4xx is the `{type, message, status_code}` JSON and stores nothing for the caller;
a 200 stream is a sequence of valid chatkit events without an error event; no answer holds
the victim's text and the victim's rows never change; afterwards the app is healthy and still
answers a normal turn.

The agent reaches its MCP server over real HTTP, which an ASGI transport does not serve: the
app points MCP_SERVER_URL at the session's `offline_server` (same SECRET, so tokens verify).
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest
from chatkit.types import (
    ClientToolCallItem,
    StructuredInputFreeform,
    StructuredInputItem,
    ThreadStreamEvent,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.shared_secret import SharedSecretVerifier
from app.context import RequestContext
from app.main import create_app
from app.settings import Settings
from app.store.chatkit_store import SqlStore, new_id
from tests.e2e.harness import InProcessServer, text_input
from tests.security.checks import RowSnapshot, assert_json_error, count_rows, snapshot_rows
from tests.server_fixtures import SECRET

MAX_BODY_BYTES = 65_536
MAX_MESSAGE_CHARS = 2_000
# Budgets sized for a 2-core machine: the whole module runs in well under a minute.
SHAPED_EXAMPLES = 400
FOREIGN_EXAMPLES = 100
RANDOM_JSON_EXAMPLES = 150
RANDOM_BYTES_EXAMPLES = 150

_event_adapter: TypeAdapter[ThreadStreamEvent] = TypeAdapter(ThreadStreamEvent)

FUZZ_SETTINGS = settings(
    deadline=None,
    derandomize=True,  # the same examples on every run: CI failures reproduce
    database=None,
    print_blob=False,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


@dataclass
class Tally:
    """What the fuzzers sent and got, for the closing summary."""

    examples: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    answered: Counter[str] = field(default_factory=Counter)  # 200s, by op


@dataclass(frozen=True)
class Caller:
    """One user of the in-process app."""

    http: httpx2.AsyncClient
    user_id: str
    token: str

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}

    async def post(self, body: bytes) -> httpx2.Response:
        return await self.http.post("/api/chatkit", content=body, headers=self.headers())

    async def turn(self, text: str) -> tuple[str, list[ThreadStreamEvent]]:
        """A new thread the test expects to work: its id and the validated events."""
        body = json.dumps({"type": "threads.create", "params": {"input": text_input(text)}})
        response = await self.post(body.encode())
        assert response.status_code == 200, response.text
        events = check_stream(response.text)
        created = [event for event in events if event.type == "thread.created"]
        assert created, [event.type for event in events]
        return str(created[0].thread.id), events

    async def items_of(self, thread_id: str) -> list[str]:
        """Item ids in a stable order (by type, then position), so examples replay alike."""
        params = {"thread_id": thread_id, "limit": 50, "order": "asc"}
        response = await self.post(json.dumps({"type": "items.list", "params": params}).encode())
        items = list(enumerate(response.json()["data"]))
        return [item["id"] for _, item in sorted(items, key=lambda p: (p[1]["type"], p[0]))]


@dataclass
class Target:
    """The fuzz user, the victim, and the ids worth aiming at."""

    fuzzer: Caller
    victim: Caller
    engine: AsyncEngine
    own_threads: list[str]
    own_items: list[str]
    disposable_thread: str
    foreign_threads: list[str]
    foreign_items: list[str]
    victim_rows: RowSnapshot
    victim_secret: str
    tally: Tally = field(default_factory=Tally)
    fuzzer_rows: dict[str, int] | None = None
    """The fuzz user's row counts after the last refused body; None once a body was answered."""


def check_stream(payload: str) -> list[ThreadStreamEvent]:
    """Every frame is `data: <one chatkit event>`; the stream ends on a frame boundary."""
    assert payload.endswith("\n\n") or payload == "", payload[-200:]
    events = []
    for frame in payload.split("\n\n")[:-1]:
        assert frame.startswith("data: ") and "\n" not in frame, frame[:200]
        events.append(_event_adapter.validate_json(frame[len("data: ") :]))
    return events


@pytest.fixture(scope="module")
async def target(
    postgres_url: str,
    offline_server: InProcessServer,
    minter: SharedSecretVerifier,
    pg_engine: AsyncEngine,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Target]:
    app = create_app(
        Settings(
            database_url=postgres_url,
            auth_jwt_secret=SECRET,
            auth_jwks_url=None,
            openai_api_key=None,
            openai_base_url=None,
            data_dir=Path(tmp_path_factory.mktemp("fuzz-data")),
            mcp_server_url=f"{offline_server.base_url}/mcp",
            thread_titles="first_words",
            rate_limit_turns_per_minute=0,
            rate_limit_concurrent_streams=0,
            max_body_bytes=MAX_BODY_BYTES,
            max_message_chars=MAX_MESSAGE_CHARS,
            log_level="WARNING",
        )
    )
    marker = uuid.uuid4().hex
    user_id, victim_id = f"user-fuzz-{marker}", f"user-victim-{marker}"
    async with (
        app.router.lifespan_context(app),
        httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=app, raise_app_exceptions=False),
            base_url="http://fuzz.test",
            timeout=60,
        ) as http,
    ):
        fuzzer = Caller(http, user_id, minter.mint(user_id))
        victim = Caller(http, victim_id, minter.mint(victim_id))
        victim_secret = f"victim-{marker[:8]}"  # short enough to stay whole in a title
        victim_thread, _ = await victim.turn(f"add task {victim_secret}")
        main_thread, _ = await fuzzer.turn("add task fuzz")
        # Items a client answers, so those ops can succeed too (once: then they are done).
        store, context = SqlStore(pg_engine), RequestContext(user_id, "-", "fuzz")
        question = StructuredInputItem(
            id=new_id("si"),
            thread_id=main_thread,
            created_at=datetime.now(),
            inputs=[StructuredInputFreeform(id="q", question="Why?")],
        )
        call = ClientToolCallItem(
            id=new_id("tc"),
            thread_id=main_thread,
            created_at=datetime.now(),
            call_id="call_fuzz",
            name="get_location",
            arguments={},
        )
        for item in (question, call):
            await store.add_thread_item(main_thread, item, context)
        disposable_thread, _ = await fuzzer.turn("delete me")
        yield Target(
            fuzzer=fuzzer,
            victim=victim,
            engine=pg_engine,
            own_threads=[main_thread],
            own_items=await fuzzer.items_of(main_thread),
            disposable_thread=disposable_thread,
            foreign_threads=[victim_thread],
            foreign_items=await victim.items_of(victim_thread),
            victim_rows=await snapshot_rows(pg_engine, victim_id, [victim_thread]),
            victim_secret=victim_secret,
        )


# -- strategies --------------------------------------------------------------------------------


def weighted(*options: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of `options`, chosen in proportion to its weight (`one_of` merges equal branches)."""
    choices = [strategy for weight, strategy in options for _ in range(weight)]
    return st.sampled_from(choices).flatmap(lambda strategy: strategy)


huge_ints = st.sampled_from([2**31, 2**63, -(2**63) - 1, 10**30, -(10**400)])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    huge_ints,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
metadata = st.dictionaries(st.text(max_size=8), json_values, max_size=3)
# Valid in shape: what a field would hold if it were right.
hostile_text = weighted(
    (4, st.text(min_size=1, max_size=60)),  # any unicode, NUL included
    (1, st.sampled_from(["", " ", "\x00", "\u202e\u0000evil", "🙂" * 40, "\ufeff", "';--"])),
    (1, st.builds(lambda n: "x" * n, st.integers(MAX_MESSAGE_CHARS - 2, MAX_MESSAGE_CHARS + 2))),
)
command_text = st.one_of(
    st.sampled_from(["list tasks", "add task fuzzed", "show open tasks"]),
    st.builds(
        lambda verb, n: f"{verb} task {n}",
        st.sampled_from(["complete", "delete", "update"]),
        st.one_of(st.integers(0, 10**6), huge_ints.map(abs)),
    ),
)


@dataclass(frozen=True)
class Ids:
    """Where ids come from: mostly the fuzz user's own, else foreign, unknown or random."""

    threads: st.SearchStrategy[str]
    items: st.SearchStrategy[str]
    disposable_thread: st.SearchStrategy[str]


def id_strategies(target: Target) -> Ids:
    foreign = st.sampled_from(target.foreign_threads + target.foreign_items)
    own_threads, own_items = st.sampled_from(target.own_threads), st.sampled_from(target.own_items)
    others = st.one_of(
        st.sampled_from(["thr_unknown", "msg_unknown", "atc_unknown", "", " ", "thr_" + "9" * 60]),
        st.text(max_size=80),  # any unicode, NUL included
        st.just("thr_" + "x" * 10_240),
    )
    return Ids(
        threads=weighted((5, own_threads), (2, foreign), (1, own_items), (2, others)),
        items=weighted((5, own_items), (2, foreign), (1, own_threads), (2, others)),
        # Deleting the threads the other ops aim at would turn them all into 404s.
        disposable_thread=weighted(
            (4, st.just(target.disposable_thread)), (2, foreign), (2, others)
        ),
    )


def foreign_id_strategies(target: Target) -> Ids:
    """Only the victim's ids, each in its own role or another's."""
    threads = st.sampled_from(target.foreign_threads)
    items = st.sampled_from(target.foreign_items)
    return Ids(
        threads=weighted((4, threads), (1, items)),
        items=weighted((4, items), (1, threads)),
        disposable_thread=threads,
    )


def maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the right kind of value, sometimes anything at all."""
    return weighted((7, valid), (1, json_values))


@st.composite
def fields(draw: st.DrawFn, spec: dict[str, st.SearchStrategy[Any]]) -> dict[str, Any]:
    """A params object: each key usually present, sometimes missing; sometimes an extra key."""
    out: dict[str, Any] = {}
    for key, strategy in spec.items():
        if draw(st.sampled_from(range(20))) != 19:
            out[key] = draw(strategy)
    if draw(st.sampled_from(range(20))) == 19:
        out[draw(st.text(max_size=10))] = draw(json_values)
    return out


def user_input(ids: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    text_part = st.fixed_dictionaries(
        {"type": st.just("input_text"), "text": st.one_of(command_text, hostile_text)}
    )
    tag_part = st.fixed_dictionaries(
        {
            "type": st.just("input_tag"),
            "id": st.text(max_size=10),
            "text": hostile_text,
            "data": st.dictionaries(st.text(max_size=5), json_values, max_size=2),
            "interactive": st.booleans(),
        }
    )
    part = weighted((6, text_part), (1, tag_part), (1, json_values))
    content = st.lists(part, min_size=1, max_size=3)
    return maybe(
        fields(
            {
                "content": maybe(content),
                "attachments": maybe(weighted((3, st.just([])), (1, st.lists(ids, max_size=2)))),
                "quoted_text": maybe(st.one_of(st.none(), hostile_text)),
                "inference_options": maybe(
                    st.one_of(
                        st.just({}),
                        st.fixed_dictionaries(
                            {"model": hostile_text, "tool_choice": st.just({"id": "x"})}
                        ),
                    )
                ),
            }
        )
    )


def chatkit_bodies(ids: Ids) -> st.SearchStrategy[Any]:
    thread_id = maybe(ids.threads)
    item_id = maybe(ids.items)
    after = maybe(weighted((3, st.none()), (1, ids.threads), (1, ids.items)))
    limit = maybe(st.one_of(st.none(), st.integers(-5, 200), huge_ints))
    order = maybe(st.sampled_from(["asc", "desc"]))
    action = maybe(st.fixed_dictionaries({"type": hostile_text, "payload": json_values}))
    structured = maybe(
        st.fixed_dictionaries(
            {
                "status": st.sampled_from(["answered", "skipped"]),
                "answers": st.dictionaries(
                    st.text(max_size=5),
                    st.fixed_dictionaries({"values": st.lists(hostile_text, max_size=2)}),
                    max_size=2,
                ),
            }
        )
    )
    ops: dict[str, dict[str, st.SearchStrategy[Any]]] = {
        "threads.create": {"input": user_input(ids.items)},
        "threads.add_user_message": {"thread_id": thread_id, "input": user_input(ids.items)},
        "threads.add_client_tool_output": {"thread_id": thread_id, "result": json_values},
        "threads.add_structured_input": {
            "thread_id": thread_id,
            "item_id": item_id,
            "input": structured,
        },
        "threads.retry_after_item": {"thread_id": thread_id, "item_id": item_id},
        "threads.custom_action": {"thread_id": thread_id, "item_id": item_id, "action": action},
        "threads.sync_custom_action": {
            "thread_id": thread_id,
            "item_id": item_id,
            "action": action,
        },
        "threads.get_by_id": {"thread_id": thread_id},
        "threads.list": {"limit": limit, "order": order, "after": after},
        "items.list": {
            "thread_id": thread_id,
            "limit": limit,
            "order": order,
            "after": after,
        },
        "items.feedback": {
            "thread_id": thread_id,
            "item_ids": maybe(st.lists(ids.items, max_size=3)),
            "kind": maybe(st.sampled_from(["positive", "negative"])),
        },
        "attachments.create": {
            "name": hostile_text,
            "size": maybe(st.integers()),
            "mime_type": hostile_text,
        },
        "attachments.delete": {"attachment_id": item_id},
        "threads.update": {"thread_id": thread_id, "title": maybe(hostile_text)},
        "threads.delete": {"thread_id": maybe(ids.disposable_thread)},
        "input.transcribe": {"audio_base64": hostile_text, "mime_type": hostile_text},
    }
    shaped = st.sampled_from(sorted(ops)).flatmap(
        lambda op: st.fixed_dictionaries(
            {"type": st.just(op), "params": fields(ops[op])},
            optional={"metadata": maybe(metadata), "extra": json_values},
        )
    )
    wrong_op = st.fixed_dictionaries(
        {"type": st.one_of(st.text(max_size=30), json_values), "params": json_values}
    )
    return weighted((9, shaped), (1, wrong_op))


# -- the property ------------------------------------------------------------------------------


async def check_one(target: Target, body: bytes, kind: str, op: str | None = None) -> None:
    """Send one body as the fuzz user and check every property."""
    tally, fuzzer = target.tally, target.fuzzer
    tally.examples[kind] += 1
    # Only this module's requests touch the fuzz user's rows, and each has ended (ASGI
    # transport) before the next: the counts after a refused body are the next one's "before".
    before = target.fuzzer_rows
    if before is None:
        before = await count_rows(target.engine, fuzzer.user_id)
    target.fuzzer_rows = None
    response = await fuzzer.post(body)
    tally.statuses[response.status_code] += 1
    assert response.status_code < 500, (response.status_code, response.text[:300], body[:300])
    assert target.victim_secret not in response.text, (response.text[:300], body[:300])
    if response.status_code >= 400:
        assert_json_error(response, range(400, 500))
        after = await count_rows(target.engine, fuzzer.user_id)
        assert after == before, body[:300]
        target.fuzzer_rows = after
        return
    assert response.status_code == 200, response.status_code
    tally.answered[op or kind] += 1
    if response.headers["content-type"].startswith("text/event-stream"):
        events = check_stream(response.text)
        errors = [event for event in events if event.type == "error"]
        assert not errors, (errors, body[:300])
    else:
        assert response.headers["content-type"].startswith("application/json")
        response.json()


def encode(body: Any) -> bytes:
    return json.dumps(body, allow_nan=True).encode()


def _op_of(body: Any) -> str:
    op = body.get("type") if isinstance(body, dict) else None
    return op if isinstance(op, str) and "." in op and len(op) < 40 else "(other)"


# The body strategies are built once per module: building them for every example cost more
# than drawing from them, and the examples drawn are the same.
@pytest.fixture(scope="module")
def shaped_bodies(target: Target) -> st.SearchStrategy[Any]:
    return chatkit_bodies(id_strategies(target))


@pytest.fixture(scope="module")
def foreign_bodies(target: Target) -> st.SearchStrategy[Any]:
    return chatkit_bodies(foreign_id_strategies(target))


@settings(FUZZ_SETTINGS, max_examples=SHAPED_EXAMPLES)
@given(data=st.data())
async def test_fuzz_chatkit_shaped_bodies(
    target: Target, shaped_bodies: st.SearchStrategy[Any], data: st.DataObject
) -> None:
    body = data.draw(shaped_bodies, label="body")
    await check_one(target, encode(body), "shaped", _op_of(body))


@settings(FUZZ_SETTINGS, max_examples=FOREIGN_EXAMPLES)
@given(data=st.data())
async def test_fuzz_with_the_victims_ids(
    target: Target, foreign_bodies: st.SearchStrategy[Any], data: st.DataObject
) -> None:
    """Every op aimed at the victim's ids: nothing of the victim's is read or changed."""
    body = data.draw(foreign_bodies, label="body")
    await check_one(target, encode(body), "foreign_ids", _op_of(body))
    victim = target.victim
    assert await snapshot_rows(target.engine, victim.user_id, target.foreign_threads) == (
        target.victim_rows
    )


@settings(FUZZ_SETTINGS, max_examples=RANDOM_JSON_EXAMPLES)
@given(body=json_values)
async def test_fuzz_random_json(target: Target, body: Any) -> None:
    await check_one(target, encode(body), "random_json")


@settings(FUZZ_SETTINGS, max_examples=RANDOM_BYTES_EXAMPLES)
@given(
    body=st.one_of(
        st.binary(max_size=2_000),
        # Near misses: a valid body with bytes flipped, cut or appended.
        st.tuples(
            st.sampled_from(
                [
                    b'{"type":"threads.list","params":{"limit":3}}',
                    encode({"type": "threads.create", "params": {"input": text_input("hi")}}),
                ]
            ),
            st.integers(0, 60),
            st.binary(min_size=1, max_size=4),
        ).map(lambda t: t[0][: t[1]] + t[2] + t[0][t[1] :]),
    )
)
async def test_fuzz_random_bytes(target: Target, body: bytes) -> None:
    await check_one(target, body, "random_bytes")


@settings(FUZZ_SETTINGS, max_examples=40)
@given(data=st.data())
async def test_fuzz_ids_with_nul(target: Target, data: st.DataObject) -> None:
    op = data.draw(st.sampled_from(["threads.get_by_id", "items.list", "threads.delete"]))
    thread_id = data.draw(st.text(min_size=1, max_size=20).map(lambda s: s + "\x00"))
    response = await target.fuzzer.post(encode({"type": op, "params": {"thread_id": thread_id}}))
    assert_json_error(response, (400, 404))


# -- afterwards --------------------------------------------------------------------------------


async def test_zz_healthy_after_fuzzing(
    target: Target, pg_engine: AsyncEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    """Runs last in this module: health, readiness, the victim's rows, and a normal turn."""
    http = target.fuzzer.http
    assert (await http.get("/health")).status_code == 200
    ready = await http.get("/ready")
    assert ready.status_code == 200, ready.text
    victim_now = await snapshot_rows(pg_engine, target.victim.user_id, target.foreign_threads)
    assert victim_now == target.victim_rows
    _, events = await target.fuzzer.turn("list tasks")
    assert not [event for event in events if event.type == "error"]
    assert any(event.type == "thread.item.done" for event in events)
    tally = target.tally
    statuses = dict(sorted(tally.statuses.items()))
    with capsys.disabled():
        print(f"\nfuzz examples: {dict(tally.examples)}; statuses: {statuses}")
        print(f"fuzz 200 answers by op: {dict(sorted(tally.answered.items()))}")
    if tally.examples["shaped"]:  # the fuzzers ran in this session: all of their examples
        assert tally.examples["shaped"] >= SHAPED_EXAMPLES, tally.examples
