"""Users and conversations in SQL: SQLite under the state folder by default, any SQLAlchemy URL by setting."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import ClassVar
from uuid import uuid4

from sqlalchemy import JSON, Engine, ForeignKey, String, Table, Text, create_engine, event, inspect, text
from sqlalchemy.exc import DatabaseError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_fixed

log = logging.getLogger("conveyor.api")


def _now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    __table__: ClassVar[Table]  # every model maps one plain table (SQLAlchemy types it as any FromClause)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    conversations: Mapped[list[Conversation]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )


class Conversation(Base):
    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: uuid4().hex)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=_now)
    updated_at: Mapped[datetime] = mapped_column(default=_now, onupdate=_now)
    user: Mapped[User] = relationship(back_populates="conversations")
    messages: Mapped[list[Message]] = relationship(
        order_by="Message.id", cascade="all, delete-orphan", passive_deletes=True
    )


class Message(Base):
    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    agent: Mapped[str | None] = mapped_column(String(64))
    sources: Mapped[list | None] = mapped_column(JSON)
    run_id: Mapped[str | None] = mapped_column(String(64), index=True)  # the answer's agent-memory run
    answer_id: Mapped[str | None] = mapped_column(String(32), unique=True, index=True)
    lineage: Mapped[dict | None] = mapped_column(JSON)  # conveyor.lineage.Lineage of an answer
    created_at: Mapped[datetime] = mapped_column(default=_now)


class RateLimitCounter(Base):
    """One `limits` fixed-window counter, shared by every API process on this database."""

    __tablename__ = "rate_limits"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    hits: Mapped[int]
    expires_at: Mapped[float] = mapped_column(index=True)  # Unix time the window ends


def make_engine(url: str) -> Engine:
    """An engine with the tables created; SQLite gets foreign keys and WAL for concurrent readers."""
    is_sqlite = url.startswith("sqlite")
    engine = create_engine(url, connect_args={"check_same_thread": False} if is_sqlite else {})
    if is_sqlite:

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection, _record) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()

    # Replicas starting together on an empty database race to create the tables: the loser's CREATE fails
    # because the table now exists, and its retry finds every table in place.
    for attempt in Retrying(
        retry=retry_if_exception_type(DatabaseError),
        stop=stop_after_attempt(3),
        wait=wait_fixed(0.5),
        reraise=True,
    ):
        with attempt:
            Base.metadata.create_all(engine)
            _add_new_columns(engine)
    return engine


def _add_new_columns(engine: Engine) -> None:
    """Add to a database made by an older version the (nullable) columns its tables lack, and the indexes
    it lacks: existing rows keep their data and read null there."""
    inspector = inspect(engine)
    quote = engine.dialect.identifier_preparer.quote
    for table in Base.metadata.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        added = [column for column in table.columns if column.name not in present]
        indexed = {index["name"] for index in inspector.get_indexes(table.name)}
        missing = [index for index in table.indexes if index.name not in indexed]
        if not added and not missing:
            continue
        with engine.begin() as connection:
            for column in added:
                kind = column.type.compile(dialect=engine.dialect)
                connection.execute(
                    text(f"ALTER TABLE {quote(table.name)} ADD COLUMN {quote(column.name)} {kind}")
                )
                log.info("database: added column %s.%s (the database predates it)", table.name, column.name)
            for index in missing:
                index.create(connection, checkfirst=True)


def make_sessionmaker(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)
