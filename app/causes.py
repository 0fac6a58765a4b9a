"""What an exception was raised from, walked one way for the whole app.

Libraries wrap each other's errors (the agents SDK wraps a tool's, SQLAlchemy a driver's, httpx a
socket's) and an error raised while handling another hides it in `__context__`. Classifying a
failure means looking at the whole chain: `exc`, then its `__cause__` or else its `__context__`.
"""

from __future__ import annotations

from typing import TypeVar

MAX_DEPTH = 10  # a chain is a few links deep; the cap only guards against cycles

_E = TypeVar("_E", bound=BaseException)


def chain(exc: BaseException | None) -> list[BaseException]:
    """`exc`, what it was raised from, and what it was raised while handling, in that order."""
    found: list[BaseException] = []
    current = exc
    while current is not None and len(found) < MAX_DEPTH:
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


def caused_by(exc: BaseException | None, kind: type[_E]) -> _E | None:
    """The first `kind` in `exc`'s chain, or None."""
    for error in chain(exc):
        if isinstance(error, kind):
            return error
    return None
