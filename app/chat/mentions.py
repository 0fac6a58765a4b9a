"""@-mentions from the composer (`input_tag` parts), as the model reads them.

A task mention is a tag whose `data` holds `{"task_id": 12, "title": "buy milk"}` (the shape
GET /api/tasks gives a page for its `entities.onTagSearch`), or whose `id` is `task:12`. It
reaches the model as `task #12 "buy milk"`. Any other tag is passed on as its JSON data.
"""

from __future__ import annotations

import json

from chatkit.types import UserMessageTagContent

from app.chat.task_widgets import TaskId, clean_title, read_task_id

TASK_TAG_PREFIX = "task:"
TASK_TAG_GROUP = "Tasks"
MAX_TAG_DATA_CHARS = 2000


def task_tag_id(task_id: TaskId) -> str:
    """The `id` a page gives the tag of a task mention."""
    return f"{TASK_TAG_PREFIX}{task_id}"


def mentioned_task(tag: UserMessageTagContent) -> tuple[TaskId, str] | None:
    """The task id and title a tag mentions, or None when it is not a task mention."""
    task_id = read_task_id(tag.data.get("task_id"))
    if task_id is None and tag.id.startswith(TASK_TAG_PREFIX):
        raw = tag.id[len(TASK_TAG_PREFIX) :]
        numeric = raw.isascii() and raw.isdigit() and len(raw) <= 18
        task_id = read_task_id(int(raw) if numeric else raw)
    if task_id is None:
        return None
    title = tag.data.get("title")
    return task_id, clean_title(title if isinstance(title, str) else tag.text)


def mention_text(tag: UserMessageTagContent) -> str:
    """What the model reads about one mention."""
    task = mentioned_task(tag)
    if task is not None:
        task_id, title = task
        return f"@{tag.text} refers to task #{task_id} {json.dumps(title, ensure_ascii=False)}."
    data = json.dumps(tag.data, ensure_ascii=False, default=str)[:MAX_TAG_DATA_CHARS]
    return f"@{tag.text} refers to: {data}"
