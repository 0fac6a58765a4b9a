"""Thread and item times the SDK stamped in the server's local time become UTC.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30

`chat_threads.created_at` and `chat_items.created_at` held the naive local time of the process
that wrote them (the SDK stamps `datetime.now()`); every other time column was already naive UTC.
From this revision on the store writes and compares naive UTC there too.

Assumption for the rows already stored: they were written by servers in the time zone of the
process that runs this migration (its TZ, else /etc/localtime), which is what a deployment in one
zone has. On a UTC host nothing changes. Rows written from several zones cannot be told apart
afterwards; they keep the order this conversion gives them. Ambiguous local times (the hour
repeated when daylight saving ends) are read as the first of the two.
"""

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("chat_threads", "chat_items")
BATCH = 1000


def _local_zone_is_utc() -> bool:
    """Whether local time is UTC all year (then stored local times already are UTC)."""
    return all(
        datetime(2026, month, 1, 12).astimezone().utcoffset() == timedelta(0)
        for month in range(1, 13)
    )


def _local_to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


def _utc_to_local(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC).astimezone().replace(tzinfo=None)


def _convert(convert: Callable[[datetime], datetime]) -> None:
    if _local_zone_is_utc():
        return
    bind = op.get_bind()
    for name in TABLES:
        table = sa.table(
            name, sa.column("seq", sa.BigInteger()), sa.column("created_at", sa.DateTime())
        )
        update = (
            sa.update(table)
            .where(table.c.seq == sa.bindparam("row_seq"))
            .values(created_at=sa.bindparam("row_time"))
        )
        last = None
        while True:
            query = sa.select(table.c.seq, table.c.created_at).order_by(table.c.seq).limit(BATCH)
            if last is not None:
                query = query.where(table.c.seq > last)
            rows = bind.execute(query).all()
            if not rows:
                break
            bind.execute(
                update,
                [{"row_seq": seq, "row_time": convert(created_at)} for seq, created_at in rows],
            )
            last = rows[-1][0]


def upgrade() -> None:
    _convert(_local_to_utc)


def downgrade() -> None:
    _convert(_utc_to_local)
