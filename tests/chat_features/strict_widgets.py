"""Checks that a widget is valid as chatkit's strict component types, field for field."""

from __future__ import annotations

import warnings
from typing import Any

from chatkit.widgets import StrictWidgetRoot
from pydantic import TypeAdapter

_STRICT: TypeAdapter[Any] = TypeAdapter(StrictWidgetRoot)


def assert_strict_widget(widget: dict[str, Any]) -> None:
    """`widget` (its JSON) validates as Card/ListView/Basic and loses no field doing so.

    Pydantic ignores unknown fields, so a misspelled property would silently vanish; comparing
    the strict model's dump with the input catches it.
    """
    with warnings.catch_warnings():
        # The SDK deprecates building its named classes in code; validating them is the point.
        warnings.simplefilter("ignore", DeprecationWarning)
        strict = _STRICT.validate_python(widget)
    assert strict.model_dump(mode="json", exclude_none=True) == widget
