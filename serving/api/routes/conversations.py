"""The signed-in user's conversations: list, read with messages, delete. Others' conversations are 404."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Response, status
from pydantic import BaseModel, ConfigDict, Field

from serving import crud
from serving.api.deps import CurrentUser, SessionDep
from serving.db import Conversation, User

router = APIRouter(prefix="/conversations", tags=["chat"])
ConversationId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]


class ConversationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    title: str
    created_at: datetime
    updated_at: datetime


class MessageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    role: str
    content: str
    agent: str | None
    sources: list[dict[str, Any]] | None
    run_id: str | None
    lineage: dict[str, Any] | None = Field(description="What produced an answer (null for older answers).")
    created_at: datetime


class ConversationDetail(ConversationOut):
    messages: list[MessageOut]


def _mine(session, user: User, conversation_id: str) -> Conversation:
    try:
        return crud.get_conversation(session, user, conversation_id)
    except LookupError as exc:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=str(exc)) from None


@router.get("")
def list_conversations(user: CurrentUser, session: SessionDep) -> list[ConversationOut]:
    """Your conversations, most recent first."""
    return [ConversationOut.model_validate(c) for c in crud.list_conversations(session, user)]


@router.get("/{conversation_id}")
def read_conversation(
    conversation_id: ConversationId, user: CurrentUser, session: SessionDep
) -> ConversationDetail:
    """One of your conversations with all its messages."""
    return ConversationDetail.model_validate(_mine(session, user, conversation_id))


@router.delete("/{conversation_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_conversation(conversation_id: ConversationId, user: CurrentUser, session: SessionDep) -> Response:
    """Delete one of your conversations."""
    crud.delete_conversation(session, _mine(session, user, conversation_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
