"""Chat with the agents: one answer as JSON, or tokens streamed as server-sent events."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.sse import EventSourceResponse, format_sse_event
from pydantic import BaseModel, Field, StringConstraints
from sqlalchemy.orm import Session

from agents import chat as agent_chat
from agents.llm import LLMUnavailable
from conveyor.lineage import Lineage
from serving import crud
from serving.api.deps import CurrentUser, SessionDep, SettingsDep
from serving.core import metrics
from serving.core.concurrency import GenerationTimeout, call_blocking, iterate_blocking
from serving.db import Conversation, User

router = APIRouter(tags=["chat"])
log = logging.getLogger(__name__)
EVENT_STREAM: dict[str, Any] = {"description": "server-sent events", "content": {"text/event-stream": {}}}
LLM_ERRORS: dict[int | str, dict[str, Any]] = {
    503: {
        "description": "the LLM is down or busy past the timeout (with the agent and any sources it found)"
    },
    504: {"description": "the LLM did not answer within the timeout"},
}


class ChatRequest(BaseModel):
    message: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=8000)]
    conversation_id: str | None = Field(None, pattern=r"^[0-9a-f]{32}$")


class ChatResponse(BaseModel):
    answer: str
    agent: str
    sources: list[dict[str, Any]]
    conversation_id: str
    run_id: str | None = None
    lineage: Lineage | None = Field(None, description="What produced the answer; `GET /lineage/{answer_id}`.")


def _open(session: Session, user: User, body: ChatRequest) -> tuple[Conversation, list[dict]]:
    try:
        conversation = crud.open_conversation(session, user, body.conversation_id, body.message)
    except LookupError as exc:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=str(exc)) from None
    return conversation, crud.history(session, conversation)


def _reply_fields(reply: Any) -> dict[str, Any]:
    """answer/agent/sources/run_id/lineage of a ChatReply (or of a final event's dict)."""
    data = reply.model_dump() if isinstance(reply, BaseModel) else dict(reply)
    run_id = data.get("run_id")
    return {
        "answer": str(data.get("answer", "")),
        "agent": str(data.get("agent", "")),
        "sources": list(data.get("sources") or []),
        "run_id": None if run_id is None else str(run_id),
        "lineage": data.get("lineage"),
    }


@router.post("/chat", responses=LLM_ERRORS)
async def chat(
    body: ChatRequest, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> ChatResponse:
    """Route the message to an agent and return its answer, sources, conversation id and lineage."""
    conversation, history = await run_in_threadpool(_open, session, user, body)
    reply = _reply_fields(
        await call_blocking(agent_chat.reply, body.message, history, timeout=settings.llm_timeout_s)
    )
    await run_in_threadpool(crud.record_turn, session, conversation, body.message, **reply)
    return ChatResponse(conversation_id=conversation.id, **reply)


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return format_sse_event(event=event, data_str=json.dumps(data, default=str))


@router.post("/chat/stream", response_class=Response, responses={**LLM_ERRORS, 200: EVENT_STREAM})
async def chat_stream(
    body: ChatRequest, user: CurrentUser, session: SessionDep, settings: SettingsDep, request: Request
) -> EventSourceResponse:
    """Stream the answer: `meta`, then `token` events, then `final` (answer, agent, sources, lineage) or
    `error`."""
    conversation, history = await run_in_threadpool(_open, session, user, body)
    events = iterate_blocking(partial(agent_chat.stream_reply, body.message, history), settings.llm_timeout_s)
    first = await anext(events, None)  # an unavailable or silent model fails the request with 503/504 here

    async def stream() -> AsyncIterator[bytes]:
        yield _sse("meta", {"conversation_id": conversation.id, "request_id": request.state.request_id})
        event = first
        try:
            while event is not None:
                if event.type == "token":
                    metrics.TOKENS_STREAMED.labels("/chat/stream").inc()
                    yield _sse("token", {"text": str(event.data)})
                else:
                    reply = _reply_fields(event.data)
                    await run_in_threadpool(crud.record_turn, session, conversation, body.message, **reply)
                    yield _sse("final", {"conversation_id": conversation.id, **reply})
                event = await anext(events, None)
        except Exception as exc:  # headers are sent: report the failure as the stream's last event
            log.warning("chat stream %s failed: %s", request.state.request_id, type(exc).__name__)
            yield _sse("error", _stream_failure(exc))
        finally:
            await events.aclose()

    return EventSourceResponse(stream())


def _stream_failure(exc: Exception) -> dict[str, Any]:
    if isinstance(exc, agent_chat.ChatUnavailable):
        return {"detail": str(exc), **exc.found}
    if isinstance(exc, LLMUnavailable | GenerationTimeout):
        return {"detail": str(exc)}
    return {"detail": "the answer failed on the server; see the logs with the request id"}
