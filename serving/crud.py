"""Operations on users and conversations, shared by the routes and the `serving.users` CLI."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from serving.core.security import hash_password, verify_password
from serving.db import Conversation, Message, User

USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD = 8
HISTORY_MESSAGES = 12  # the agent sees the last few turns; older ones stay stored


class AccountError(ValueError):
    """A username or password is unacceptable; the message says why (never echoing the password)."""


def check_username(username: str) -> str:
    if not USERNAME.match(username):
        raise AccountError("username must be 1-64 letters, digits or '_.@-', starting with a letter or digit")
    return username


def check_password(password: str) -> str:
    if not MIN_PASSWORD <= len(password) <= 256:
        raise AccountError(f"password must be {MIN_PASSWORD} to 256 characters long")
    return password


def get_user(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def create_user(session: Session, username: str, password: str, is_admin: bool = False) -> User:
    check_username(username)
    check_password(password)
    if get_user(session, username) is not None:
        raise AccountError(f"user {username!r} already exists")
    user = User(username=username, password_hash=hash_password(password), is_admin=is_admin)
    session.add(user)
    session.commit()
    return user


def set_password(session: Session, user: User, password: str) -> None:
    user.password_hash = hash_password(check_password(password))
    session.commit()


def delete_user(session: Session, user: User) -> None:
    session.delete(user)
    session.commit()


def authenticate(session: Session, username: str, password: str) -> User | None:
    user = get_user(session, username)
    return user if verify_password(password, user.password_hash if user else None) else None


def ensure_first_admin(session: Session, username: str, password: str | None) -> User | None:
    """Create the first admin when the user table is empty; None when users exist or no password is set."""
    if session.scalar(select(User.id).limit(1)) is not None or password is None:
        return None
    try:
        return create_user(session, username, password, is_admin=True)
    except (IntegrityError, AccountError):  # another replica created it between the check and the insert
        session.rollback()
        return None


def open_conversation(
    session: Session, user: User, conversation_id: str | None, first_message: str
) -> Conversation:
    """The user's conversation by id (LookupError if absent or someone else's), or a new one."""
    if conversation_id is None:
        conversation = Conversation(user_id=user.id, title=first_message.strip()[:80] or "conversation")
        session.add(conversation)
        session.commit()
        return conversation
    return get_conversation(session, user, conversation_id)


def get_conversation(session: Session, user: User, conversation_id: str) -> Conversation:
    """The user's conversation; LookupError if it does not exist or belongs to someone else."""
    conversation = session.get(Conversation, conversation_id)
    if conversation is None or conversation.user_id != user.id:
        raise LookupError(f"no conversation {conversation_id!r}")
    return conversation


def delete_conversation(session: Session, conversation: Conversation) -> None:
    session.delete(conversation)
    session.commit()


def list_conversations(session: Session, user: User) -> list[Conversation]:
    query = (
        select(Conversation).where(Conversation.user_id == user.id).order_by(Conversation.updated_at.desc())
    )
    return list(session.scalars(query))


def history(session: Session, conversation: Conversation) -> list[dict]:
    """The last turns as chat messages (`role`, `content`), oldest first."""
    query = (
        select(Message)
        .where(Message.conversation_id == conversation.id)
        .order_by(Message.id.desc())
        .limit(HISTORY_MESSAGES)
    )
    return [{"role": m.role, "content": m.content} for m in reversed(list(session.scalars(query)))]


def record_turn(
    session: Session,
    conversation: Conversation,
    question: str,
    answer: str,
    agent: str | None,
    sources: list[dict],
    run_id: str | None,
    lineage: dict | None = None,
) -> None:
    session.add(Message(conversation_id=conversation.id, role="user", content=question))
    session.add(
        Message(
            conversation_id=conversation.id,
            role="assistant",
            content=answer,
            agent=agent,
            sources=sources,
            run_id=run_id,
            answer_id=lineage["answer_id"] if lineage else None,
            lineage=lineage,
        )
    )
    conversation.updated_at = datetime.now(UTC)
    session.commit()


def answer_in(session: Session, user: User, conversation_id: str, answer_id: str | None) -> Message:
    """An answer of the user's conversation: `answer_id`, or the latest one when None; LookupError (with
    the reason) if the conversation is not the user's or holds no such answer."""
    conversation = get_conversation(session, user, conversation_id)
    query = select(Message).where(Message.conversation_id == conversation.id, Message.role == "assistant")
    if answer_id is not None:
        query = query.where(Message.answer_id == answer_id)
    message = session.scalar(query.order_by(Message.id.desc()).limit(1))
    if message is None:
        raise LookupError(
            f"no answer {answer_id!r} in conversation {conversation_id!r}"
            if answer_id
            else f"conversation {conversation_id!r} has no answer yet"
        )
    return message


def run_owner(session: Session, run_id: str) -> int | None:
    """The id of the user whose conversation holds the answer recorded as agent-memory run `run_id`
    (None when no answer is: a flow's run)."""
    query = select(Conversation.user_id).join(Message).where(Message.run_id == run_id).limit(1)
    return session.scalar(query)


def get_answer(session: Session, user: User, answer_id: str) -> Message:
    """The user's stored answer; LookupError if there is none or it is in someone else's conversation."""
    message = session.scalar(
        select(Message)
        .join(Conversation)
        .where(Message.answer_id == answer_id, Conversation.user_id == user.id)
    )
    if message is None:
        raise LookupError(f"no answer {answer_id!r}")
    return message
