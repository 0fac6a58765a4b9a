"""Threads, items, attachments, feedback and TODO tasks.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "chat_threads",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
    )
    op.create_index("ix_chat_threads_user_order", "chat_threads", ["user_id", "created_at", "seq"])

    op.create_table(
        "chat_items",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column(
            "thread_id",
            sa.String(64),
            sa.ForeignKey("chat_threads.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.UniqueConstraint("thread_id", "id", name="uq_chat_items_thread_id_id"),
    )
    op.create_index("ix_chat_items_thread_order", "chat_items", ["thread_id", "created_at", "seq"])
    op.create_index("ix_chat_items_user", "chat_items", ["user_id"])

    op.create_table(
        "chat_attachments",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("thread_id", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
    )
    op.create_index("ix_chat_attachments_user", "chat_attachments", ["user_id"])

    op.create_table(
        "chat_feedback",
        sa.Column("user_id", sa.String(255), primary_key=True),
        sa.Column("thread_id", sa.String(64), primary_key=True),
        sa.Column("item_id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["thread_id", "item_id"],
            ["chat_items.thread_id", "chat_items.id"],
            ondelete="CASCADE",
            name="fk_chat_feedback_item",
        ),
    )

    op.create_table(
        "todo_tasks",
        sa.Column("id", SEQ, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("title", sa.String(500), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("completed", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_todo_tasks_user", "todo_tasks", ["user_id", "id"])


def downgrade() -> None:
    op.drop_table("todo_tasks")
    op.drop_table("chat_feedback")
    op.drop_table("chat_attachments")
    op.drop_table("chat_items")
    op.drop_table("chat_threads")
