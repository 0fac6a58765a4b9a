"""TurnStream: our own ids for the model's messages, and closing what a stopped turn left open."""

from __future__ import annotations

from datetime import datetime

from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageContentPartAdded,
    AssistantMessageContentPartDone,
    AssistantMessageContentPartTextDelta,
    AssistantMessageItem,
    ProgressUpdateEvent,
    ThreadItemAddedEvent,
    ThreadItemDoneEvent,
    ThreadItemRemovedEvent,
    ThreadItemUpdatedEvent,
    ThreadStreamEvent,
    WorkflowItem,
)
from chatkit.types import Workflow as ChatWorkflow

from app.chat.turn_stream import TurnStream

FAKE_ID = "__fake_id__"  # what Chat Completions models give every message
THREAD = "thr_turn_stream"


def message(item_id: str = FAKE_ID, *texts: str) -> AssistantMessageItem:
    return AssistantMessageItem(
        id=item_id,
        thread_id=THREAD,
        created_at=datetime.now(),
        content=[AssistantMessageContent(text=text) for text in texts],
    )


def added(item_id: str = FAKE_ID) -> ThreadItemAddedEvent:
    return ThreadItemAddedEvent(item=message(item_id))


def done(item_id: str = FAKE_ID, *texts: str) -> ThreadItemDoneEvent:
    return ThreadItemDoneEvent(item=message(item_id, *texts))


def delta(text: str, *, index: int = 0, item_id: str = FAKE_ID) -> ThreadItemUpdatedEvent:
    update = AssistantMessageContentPartTextDelta(content_index=index, delta=text)
    return ThreadItemUpdatedEvent(item_id=item_id, update=update)


def item_id_of(event: ThreadStreamEvent) -> str:
    assert isinstance(event, ThreadItemAddedEvent | ThreadItemDoneEvent)
    return event.item.id


def test_every_message_gets_its_own_id_though_the_model_reuses_one() -> None:
    stream = TurnStream()
    first = item_id_of(stream.rewrite(added()))
    first_done = item_id_of(stream.rewrite(done(FAKE_ID, "one")))
    second = item_id_of(stream.rewrite(added()))
    second_done = item_id_of(stream.rewrite(done(FAKE_ID, "two")))

    assert first.startswith("msg_") and second.startswith("msg_")
    assert first != second and FAKE_ID not in (first, second)
    # The done event of each message carries the id its added event went out with.
    assert (first_done, second_done) == (first, second)


def test_updates_and_removals_follow_the_message_they_belong_to() -> None:
    stream = TurnStream()
    own = item_id_of(stream.rewrite(added("msg_model")))

    update = stream.rewrite(delta("Hi", item_id="msg_model"))
    assert isinstance(update, ThreadItemUpdatedEvent) and update.item_id == own

    removed = stream.rewrite(ThreadItemRemovedEvent(item_id="msg_model"))
    assert isinstance(removed, ThreadItemRemovedEvent) and removed.item_id == own
    # Removed means nothing is left to close at the end.
    assert stream.finish_pending() == []


def test_events_of_other_items_pass_through_unchanged() -> None:
    stream = TurnStream()
    workflow = WorkflowItem(
        id="wf_1",
        thread_id=THREAD,
        created_at=datetime.now(),
        workflow=ChatWorkflow(type="custom", tasks=[]),
    )
    events: list[ThreadStreamEvent] = [
        ThreadItemAddedEvent(item=workflow),
        ThreadItemUpdatedEvent(
            item_id="msg_unknown",
            update=AssistantMessageContentPartTextDelta(content_index=0, delta="x"),
        ),
        ThreadItemRemovedEvent(item_id="msg_unknown"),
        ProgressUpdateEvent(text="thinking"),
    ]
    before = [event.model_dump() for event in events]

    after = [stream.rewrite(event).model_dump() for event in events]

    assert after == before
    assert stream.finish_pending() == []


def test_a_done_message_without_an_added_event_still_gets_a_fresh_id() -> None:
    own = item_id_of(TurnStream().rewrite(done(FAKE_ID, "late")))
    assert own.startswith("msg_") and own != FAKE_ID


def test_a_stopped_answer_keeps_its_partial_text_as_a_done_message() -> None:
    stream = TurnStream()
    own = item_id_of(stream.rewrite(added()))
    for piece in ("Hel", "lo ", "wor"):
        stream.rewrite(delta(piece))
    stream.rewrite(delta("second part", index=1))

    closing = stream.finish_pending()

    assert len(closing) == 1
    event = closing[0]
    assert isinstance(event, ThreadItemDoneEvent)
    assert isinstance(event.item, AssistantMessageItem)
    assert event.item.id == own
    assert [part.text for part in event.item.content] == ["Hello wor", "second part"]
    # Finished once: a second call has nothing left.
    assert stream.finish_pending() == []


def test_a_stopped_answer_without_text_is_removed() -> None:
    stream = TurnStream()
    own = item_id_of(stream.rewrite(added()))
    stream.rewrite(delta("   "))

    assert [event.model_dump() for event in stream.finish_pending()] == [
        ThreadItemRemovedEvent(item_id=own).model_dump()
    ]


def test_content_parts_added_and_done_replace_the_part_deltas_built() -> None:
    stream = TurnStream()
    stream.rewrite(added())
    stream.rewrite(delta("draft"))
    stream.rewrite(
        ThreadItemUpdatedEvent(
            item_id=FAKE_ID,
            update=AssistantMessageContentPartDone(
                content_index=0, content=AssistantMessageContent(text="final")
            ),
        )
    )
    stream.rewrite(
        ThreadItemUpdatedEvent(
            item_id=FAKE_ID,
            update=AssistantMessageContentPartAdded(
                content_index=2, content=AssistantMessageContent(text="third")
            ),
        )
    )

    (event,) = stream.finish_pending()

    assert isinstance(event, ThreadItemDoneEvent)
    assert isinstance(event.item, AssistantMessageItem)
    assert [part.text for part in event.item.content] == ["final", "", "third"]


def test_a_finished_message_is_not_closed_again() -> None:
    stream = TurnStream()
    stream.rewrite(added())
    stream.rewrite(delta("complete answer"))
    stream.rewrite(done(FAKE_ID, "complete answer"))

    assert stream.finish_pending() == []
