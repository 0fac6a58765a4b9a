"""Per-turn bookkeeping over the SDK's event stream: own item ids, and what is still in progress."""

from __future__ import annotations

from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageContentPartAdded,
    AssistantMessageContentPartDone,
    AssistantMessageContentPartTextDelta,
    AssistantMessageItem,
    ThreadItemAddedEvent,
    ThreadItemDoneEvent,
    ThreadItemRemovedEvent,
    ThreadItemUpdatedEvent,
    ThreadStreamEvent,
)

from app.store.chatkit_store import new_id


class TurnStream:
    """Gives each model message an id of ours and remembers assistant messages not yet done.

    Models reuse message ids (Chat Completions sends `__fake_id__` for every message), which would
    make each answer overwrite the previous one; every message the model starts gets a fresh id.
    """

    def __init__(self) -> None:
        self._ids: dict[str, str] = {}
        self._pending: dict[str, AssistantMessageItem] = {}

    def rewrite(self, event: ThreadStreamEvent) -> ThreadStreamEvent:
        """Return the event with our ids, and track the assistant messages it touches.

        Events are changed in place: each is made for this turn and passed on once, and the SDK
        keeps its own copy of an item it has to remember (no copies here, per event or item).
        """
        if isinstance(event, ThreadItemAddedEvent) and isinstance(event.item, AssistantMessageItem):
            own_id = new_id("msg")
            self._ids[event.item.id] = own_id
            event.item.id = own_id
            # The partial answer is rebuilt from the deltas in an item of its own (the added
            # event has already gone out when they arrive; nothing else reads its parts).
            self._pending[own_id] = event.item.model_copy(
                update={"content": list(event.item.content)}
            )
            return event
        if isinstance(event, ThreadItemDoneEvent) and isinstance(event.item, AssistantMessageItem):
            own_id = self._ids.pop(event.item.id, "") or new_id("msg")
            self._pending.pop(own_id, None)
            event.item.id = own_id
            return event
        if isinstance(event, ThreadItemUpdatedEvent) and event.item_id in self._ids:
            own_id = self._ids[event.item_id]
            self._apply(own_id, event)
            event.item_id = own_id
            return event
        if isinstance(event, ThreadItemRemovedEvent) and event.item_id in self._ids:
            own_id = self._ids.pop(event.item_id)
            self._pending.pop(own_id, None)
            event.item_id = own_id
            return event
        return event

    def _apply(self, own_id: str, event: ThreadItemUpdatedEvent) -> None:
        item = self._pending.get(own_id)
        if item is None:
            return
        update = event.update
        if isinstance(
            update,
            AssistantMessageContentPartAdded
            | AssistantMessageContentPartTextDelta
            | AssistantMessageContentPartDone,
        ):
            while len(item.content) <= update.content_index:
                item.content.append(AssistantMessageContent(text="", annotations=[]))
            if isinstance(update, AssistantMessageContentPartTextDelta):
                item.content[update.content_index].text += update.delta
            else:
                item.content[update.content_index] = update.content.model_copy(deep=True)

    def finish_pending(self) -> list[ThreadStreamEvent]:
        """Close what is still in progress: keep partial text as done, drop empty messages."""
        events: list[ThreadStreamEvent] = []
        for own_id, item in self._pending.items():
            if any(part.text.strip() for part in item.content):
                events.append(ThreadItemDoneEvent(item=item))
            else:
                events.append(ThreadItemRemovedEvent(item_id=own_id))
        self._pending.clear()
        self._ids.clear()
        return events
