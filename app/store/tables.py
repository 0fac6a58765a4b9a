"""SQLModel tables. Item and thread JSON (text, so NUL survives Postgres) is the source of truth."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlmodel import Field, SQLModel

metadata = SQLModel.metadata

# SQLite only auto-increments an INTEGER PRIMARY KEY; Postgres gets a BIGINT.
SeqType = BigInteger().with_variant(Integer(), "sqlite")
ID_LENGTH = 64
USER_ID_LENGTH = 255


class ThreadRow(SQLModel, table=True):
    """One ChatKit thread; `data` is its ThreadMetadata JSON (never its items)."""

    __tablename__ = "chat_threads"
    __table_args__ = (Index("ix_chat_threads_user_order", "user_id", "created_at", "seq"),)

    seq: int | None = Field(
        default=None, sa_column=Column(SeqType, primary_key=True, autoincrement=True)
    )
    id: str = Field(sa_column=Column(String(ID_LENGTH), unique=True, nullable=False))
    user_id: str = Field(sa_column=Column(String(USER_ID_LENGTH), nullable=False))
    created_at: datetime = Field(sa_column=Column(DateTime(), nullable=False))
    updated_at: datetime = Field(sa_column=Column(DateTime(), nullable=False))
    data: str = Field(sa_column=Column(Text(), nullable=False))


class ItemRow(SQLModel, table=True):
    """One thread item; `data` is the ThreadItem JSON as the SDK produced it."""

    __tablename__ = "chat_items"
    __table_args__ = (
        UniqueConstraint("thread_id", "id", name="uq_chat_items_thread_id_id"),
        Index("ix_chat_items_thread_order", "thread_id", "created_at", "seq"),
        Index("ix_chat_items_user", "user_id"),
    )

    seq: int | None = Field(
        default=None, sa_column=Column(SeqType, primary_key=True, autoincrement=True)
    )
    id: str = Field(sa_column=Column(String(ID_LENGTH), nullable=False))
    thread_id: str = Field(
        sa_column=Column(
            String(ID_LENGTH),
            ForeignKey("chat_threads.id", ondelete="CASCADE"),
            nullable=False,
        )
    )
    user_id: str = Field(sa_column=Column(String(USER_ID_LENGTH), nullable=False))
    type: str = Field(sa_column=Column(String(40), nullable=False))
    created_at: datetime = Field(sa_column=Column(DateTime(), nullable=False))
    data: str = Field(sa_column=Column(Text(), nullable=False))


class AttachmentRow(SQLModel, table=True):
    """Attachment metadata; `data` is the Attachment JSON."""

    __tablename__ = "chat_attachments"
    __table_args__ = (
        Index("ix_chat_attachments_user", "user_id"),
        # Finding uploads never used in a message (migration 0005).
        Index("ix_chat_attachments_created", "created_at"),
    )

    id: str = Field(sa_column=Column(String(ID_LENGTH), primary_key=True))
    user_id: str = Field(sa_column=Column(String(USER_ID_LENGTH), nullable=False))
    thread_id: str | None = Field(default=None, sa_column=Column(String(ID_LENGTH)))
    created_at: datetime = Field(sa_column=Column(DateTime(), nullable=False))
    data: str = Field(sa_column=Column(Text(), nullable=False))


class FeedbackRow(SQLModel, table=True):
    """A user's vote on one item; a second vote replaces the first."""

    __tablename__ = "chat_feedback"
    __table_args__ = (
        ForeignKeyConstraint(
            ["thread_id", "item_id"],
            ["chat_items.thread_id", "chat_items.id"],
            ondelete="CASCADE",
            name="fk_chat_feedback_item",
        ),
    )

    user_id: str = Field(sa_column=Column(String(USER_ID_LENGTH), primary_key=True))
    thread_id: str = Field(sa_column=Column(String(ID_LENGTH), primary_key=True))
    item_id: str = Field(sa_column=Column(String(ID_LENGTH), primary_key=True))
    kind: str = Field(sa_column=Column(String(16), nullable=False))
    updated_at: datetime = Field(sa_column=Column(DateTime(), nullable=False))


class TaskRow(SQLModel, table=True):
    """A TODO task of the embedded MCP server, owned by one user.

    `number` is the id its owner sees: counted per user (migration 0007), so it says nothing
    about anyone else's tasks. `id` is internal.
    """

    __tablename__ = "todo_tasks"
    __table_args__ = (
        Index("ix_todo_tasks_user", "user_id", "id"),
        UniqueConstraint("user_id", "number", name="uq_todo_tasks_user_number"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(SeqType, primary_key=True, autoincrement=True)
    )
    user_id: str = Field(sa_column=Column(String(USER_ID_LENGTH), nullable=False))
    number: int = Field(sa_column=Column(BigInteger(), nullable=False))
    title: str = Field(sa_column=Column(String(500), nullable=False))
    description: str = Field(default="", sa_column=Column(Text(), nullable=False))
    completed: bool = Field(default=False, sa_column=Column(Boolean(), nullable=False))
    created_at: datetime = Field(sa_column=Column(DateTime(), nullable=False))
    updated_at: datetime = Field(sa_column=Column(DateTime(), nullable=False))


class TaskCounterRow(SQLModel, table=True):
    """The last task number given to a user; numbers are never reused, even after a delete."""

    __tablename__ = "todo_task_counters"

    user_id: str = Field(sa_column=Column(String(USER_ID_LENGTH), primary_key=True))
    last_number: int = Field(sa_column=Column(BigInteger(), nullable=False))


class UsageWindowRow(SQLModel, table=True):
    """How many turns a user started in one fixed window (per-user rate limit)."""

    __tablename__ = "usage_windows"

    user_id: str = Field(sa_column=Column(String(USER_ID_LENGTH), primary_key=True))
    kind: str = Field(sa_column=Column(String(32), primary_key=True))
    window_start: int = Field(sa_column=Column(BigInteger(), primary_key=True))
    count: int = Field(sa_column=Column(Integer(), nullable=False))


class StreamLeaseRow(SQLModel, table=True):
    """A stream in progress; counted for the per-user concurrency limit, expires if orphaned."""

    __tablename__ = "stream_leases"
    __table_args__ = (Index("ix_stream_leases_user", "user_id", "expires_at"),)

    id: str = Field(sa_column=Column(String(ID_LENGTH), primary_key=True))
    user_id: str = Field(sa_column=Column(String(USER_ID_LENGTH), nullable=False))
    started_at: datetime = Field(sa_column=Column(DateTime(), nullable=False))
    expires_at: datetime = Field(sa_column=Column(DateTime(), nullable=False))


class ThreadTurnRow(SQLModel, table=True):
    """A thread whose answer is running: no second answer starts until it ends or expires."""

    __tablename__ = "thread_turns"

    thread_id: str = Field(sa_column=Column(String(ID_LENGTH), primary_key=True))
    user_id: str = Field(sa_column=Column(String(USER_ID_LENGTH), nullable=False))
    lease_id: str = Field(sa_column=Column(String(ID_LENGTH), nullable=False))
    expires_at: datetime = Field(sa_column=Column(DateTime(), nullable=False))


class AttachmentBlobRow(SQLModel, table=True):
    """The bytes of one uploaded attachment; removed with its metadata row (cascade)."""

    __tablename__ = "chat_attachment_blobs"

    attachment_id: str = Field(
        sa_column=Column(
            String(ID_LENGTH),
            ForeignKey("chat_attachments.id", ondelete="CASCADE"),
            primary_key=True,
        )
    )
    user_id: str = Field(sa_column=Column(String(USER_ID_LENGTH), nullable=False))
    mime_type: str = Field(sa_column=Column(String(255), nullable=False))
    size: int = Field(sa_column=Column(BigInteger(), nullable=False))
    created_at: datetime = Field(sa_column=Column(DateTime(), nullable=False))
    data: bytes = Field(sa_column=Column(LargeBinary(), nullable=False))


class SigningKeyRow(SQLModel, table=True):
    """A random secret shared by every server process (e.g. for attachment preview links)."""

    __tablename__ = "signing_keys"

    name: str = Field(sa_column=Column(String(64), primary_key=True))
    secret: str = Field(sa_column=Column(String(128), nullable=False))
    created_at: datetime = Field(sa_column=Column(DateTime(), nullable=False))
