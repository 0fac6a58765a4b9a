"""Random secrets kept in the database, so every process and machine signs with the same key."""

from __future__ import annotations

import secrets

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.store.sql import insert_for, utcnow
from app.store.tables import SigningKeyRow

_keys: Table = SigningKeyRow.__table__  # type: ignore[attr-defined]


async def load_signing_key(engine: AsyncEngine, name: str) -> bytes:
    """The secret called `name`, created on first use; concurrent first uses agree on one."""
    statement = (
        insert_for(engine)(_keys)
        .values(
            name=name,
            secret=secrets.token_urlsafe(48),
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=[_keys.c.name])
    )
    async with engine.begin() as conn:
        await conn.execute(statement)
        secret = await conn.scalar(select(_keys.c.secret).where(_keys.c.name == name))
    if not isinstance(secret, str) or not secret:
        raise RuntimeError(f"signing key {name!r} is missing")
    return secret.encode()
