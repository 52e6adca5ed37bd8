"""OpenAI-compatible chat completions over the configured LLM: the official `openai` client works as is."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Literal
from uuid import uuid4

from fastapi import APIRouter, HTTPException, status
from fastapi.sse import EventSourceResponse, format_sse_event
from pydantic import BaseModel, ConfigDict, Field

from agents.llm import LLMUnavailable, get_llm
from serving.api.deps import CurrentUser, SettingsDep
from serving.api.routes.chat import EVENT_STREAM, LLM_ERRORS
from serving.core import metrics
from serving.core.concurrency import GenerationTimeout, emit_each, iterate_blocking

router = APIRouter(prefix="/v1", tags=["openai"])
DEFAULT_MAX_TOKENS = 256
MAX_TOKENS = 2048
MAX_CHARACTERS = 32_000
STARTED = int(time.time())


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None

    def as_llm_message(self) -> dict[str, str]:
        """Plain text content; `developer` is the newer name of `system`."""
        parts = (
            self.content if isinstance(self.content, list) else [ContentPart(type="text", text=self.content)]
        )
        text = "".join(p.text or "" for p in parts if p.type == "text")
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # top_p, stop, user... are accepted and ignored

    model: str
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    temperature: float | None = Field(None, ge=0, le=2)
    stream: bool = False
    n: int = Field(1, ge=1, le=1, description="only one choice is generated")

    @property
    def token_budget(self) -> int:
        return self.max_completion_tokens or self.max_tokens or DEFAULT_MAX_TOKENS


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = STARTED
    owned_by: str = "conveyor"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


@router.get("/models")
def list_models(_: CurrentUser, settings: SettingsDep) -> ModelList:
    """The model this API serves."""
    return ModelList(data=[Model(id=settings.llm_model)])


def _llm_messages(body: CompletionRequest, served_model: str) -> list[dict[str, str]]:
    if body.model != served_model:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"model {body.model!r} does not exist; use {served_model!r}"
        )
    messages = [m.as_llm_message() for m in body.messages]
    if sum(len(m["content"]) for m in messages) > MAX_CHARACTERS:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"messages exceed {MAX_CHARACTERS} characters"
        )
    return messages


def _chunk(completion_id: str, model: str, delta: dict, finish_reason: str | None = None) -> bytes:
    chunk = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    return format_sse_event(data_str=json.dumps(chunk))


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={**LLM_ERRORS, 200: EVENT_STREAM},
)
async def chat_completions(body: CompletionRequest, _: CurrentUser, settings: SettingsDep):
    """Generate a chat completion (`stream: true` sends `chat.completion.chunk` events, then `[DONE]`)."""
    messages = _llm_messages(body, settings.llm_model)
    temperature = 0.2 if body.temperature is None else body.temperature
    completion_id = f"chatcmpl-{uuid4().hex}"
    tokens = iterate_blocking(
        emit_each(lambda: get_llm().stream(messages, max_tokens=body.token_budget, temperature=temperature)),
        settings.llm_timeout_s,
    )
    try:
        first = await anext(tokens, None)  # a model that is down, silent or overfed fails the request here
    except ValueError as exc:  # llama.cpp: the prompt does not fit the context window
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"the model cannot take this request: {exc}"
        ) from None
    if not body.stream:
        pieces = [] if first is None else [first, *[t async for t in tokens]]
        return ChatCompletion(
            id=completion_id,
            created=int(time.time()),
            model=body.model,
            choices=[
                Choice(message=AssistantMessage(content="".join(pieces)), finish_reason=_finish(pieces, body))
            ],
        )

    async def stream() -> AsyncIterator[bytes]:
        pieces: list[str] = []
        piece = first
        try:
            yield _chunk(completion_id, body.model, {"role": "assistant", "content": ""})
            while piece is not None:
                pieces.append(piece)
                metrics.TOKENS_STREAMED.labels("/v1/chat/completions").inc()
                yield _chunk(completion_id, body.model, {"content": piece})
                piece = await anext(tokens, None)
            yield _chunk(completion_id, body.model, {}, _finish(pieces, body))
        except (LLMUnavailable, GenerationTimeout) as exc:
            yield format_sse_event(
                data_str=json.dumps({"error": {"message": str(exc), "type": "server_error"}})
            )
        finally:
            await tokens.aclose()
        yield format_sse_event(data_str="[DONE]")

    return EventSourceResponse(stream())


def _finish(pieces: list[str], body: CompletionRequest) -> Literal["stop", "length"]:
    """Each streamed piece is one token of the model, so a full budget means it was cut."""
    return "length" if len(pieces) >= body.token_budget else "stop"
