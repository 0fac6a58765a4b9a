"""The line that tells a model which files came with a user message (names, not contents)."""

from __future__ import annotations

import json

ATTACHED_PREFIX = "[Attached files: "
_SUFFIX = "]"


def attachment_note(names: list[str]) -> str:
    """`[Attached files: ["cat.png", "notes.md"]]`: JSON, so any name reads back intact."""
    return ATTACHED_PREFIX + json.dumps(names, ensure_ascii=False) + _SUFFIX


def attachment_names(text: str) -> list[str] | None:
    """The names in an attachment note, or None when `text` is not one."""
    if not (text.startswith(ATTACHED_PREFIX) and text.endswith(_SUFFIX)):
        return None
    try:
        names = json.loads(text[len(ATTACHED_PREFIX) : -len(_SUFFIX)])
    except ValueError:
        return None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        return None
    return names
