"""The one walker of exception chains: causes first, then what an error was raised handling."""

from __future__ import annotations

from app.causes import MAX_DEPTH, caused_by, chain


class Outer(Exception):
    pass


class Inner(Exception):
    pass


def _raised_from(inner: BaseException) -> Outer:
    try:
        raise Outer("outer") from inner
    except Outer as exc:
        return exc


def test_chain_follows_the_cause() -> None:
    inner = Inner("inner")
    outer = _raised_from(inner)
    assert chain(outer) == [outer, inner]
    assert caused_by(outer, Inner) is inner
    assert caused_by(outer, KeyError) is None


def test_context_is_followed_when_no_cause() -> None:
    try:
        try:
            raise Inner("first")
        except Inner:
            raise Outer("while handling")  # noqa: B904 - the implicit context is the point
    except Outer as exc:
        outer = exc
    assert [type(error) for error in chain(outer)] == [Outer, Inner]
    assert isinstance(caused_by(outer, Inner), Inner)


def test_a_cycle_ends_at_the_cap() -> None:
    first, second = Inner("a"), Inner("b")
    first.__cause__, second.__cause__ = second, first
    assert len(chain(first)) == MAX_DEPTH


def test_nothing_has_no_chain() -> None:
    assert chain(None) == []
    assert caused_by(None, Exception) is None
