"""Task ids numbered per user, so an id says nothing about other users' tasks.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30

The id a user sees becomes `todo_tasks.number`, counted per user in `todo_task_counters`; the
global `id` stays as the internal key. Existing tasks keep the id their owner already knows
(`number = id`), and each user's counter starts at their highest id, so every id in old
messages still names the same task. Downgrading drops the numbers: tasks added since then are
known by their internal ids again.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("todo_tasks") as batch:
        batch.add_column(sa.Column("number", sa.BigInteger(), nullable=True))
    op.execute("UPDATE todo_tasks SET number = id")
    with op.batch_alter_table("todo_tasks") as batch:
        batch.alter_column("number", existing_type=sa.BigInteger(), nullable=False)
        batch.create_unique_constraint("uq_todo_tasks_user_number", ["user_id", "number"])
    op.create_table(
        "todo_task_counters",
        sa.Column("user_id", sa.String(255), primary_key=True),
        sa.Column("last_number", sa.BigInteger(), nullable=False),
    )
    op.execute(
        "INSERT INTO todo_task_counters (user_id, last_number) "
        "SELECT user_id, MAX(number) FROM todo_tasks GROUP BY user_id"
    )


def downgrade() -> None:
    op.drop_table("todo_task_counters")
    with op.batch_alter_table("todo_tasks") as batch:
        batch.drop_constraint("uq_todo_tasks_user_number", type_="unique")
        batch.drop_column("number")
