"""Chat entry points for the API: route a message to an agent, answer whole or as a token stream."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from typing import Literal

from pydantic import BaseModel

from agents import memory
from agents.base import AgentResult
from agents.registry import get_agent
from agents.router import route

log = logging.getLogger(__name__)
HISTORY_TURNS = 6


class ChatReply(BaseModel):
    answer: str
    agent: str
    sources: list[dict]
    run_id: str | None = None


class ChatEvent(BaseModel):
    type: Literal["token", "final", "error"]
    data: str | dict


def history_text(history: list[dict]) -> str:
    turns = history[-HISTORY_TURNS:]
    return "\n".join(f"{t.get('role', 'user')}: {str(t.get('content', ''))[:1000]}" for t in turns)


def _run(message: str, history: list[dict], on_token=None) -> ChatReply:
    started = time.perf_counter()
    agent = get_agent(route(message).agent)
    context = history_text(history)
    if agent.streams and on_token:
        result: AgentResult = agent.run(
            agent.request(instruction=message, context=context), on_token=on_token
        )
    else:
        result = agent(message, context)
        if on_token:
            on_token(result.answer)
    try:
        run_id = memory.record(
            "agent",
            agent.name,
            message,
            result.ok,
            time.perf_counter() - started,
            error=result.error or "",
            output=str(result.data.get("code") or result.answer),
        )
    except Exception:  # memory is best effort for chat: the user still gets the answer
        log.exception("could not record the chat run in agent memory")
        run_id = None
    return ChatReply(answer=result.answer, agent=agent.name, sources=result.sources, run_id=run_id)


def reply(message: str, history: list[dict]) -> ChatReply:
    """Route `message` to one agent and return its whole answer (history gives the conversation so far)."""
    return _run(message, history)


def stream_reply(message: str, history: list[dict]) -> Iterator[ChatEvent]:
    """Tokens as the agent produces them, then one final event {agent, sources, answer, run_id}."""
    events: queue.Queue[ChatEvent | None] = queue.Queue()

    def work() -> None:
        try:
            final = _run(message, history, on_token=lambda t: events.put(ChatEvent(type="token", data=t)))
            events.put(ChatEvent(type="final", data=final.model_dump()))
        except Exception as exc:  # reported to the client as an error event, not a dropped stream
            log.exception("chat stream failed")
            events.put(ChatEvent(type="error", data=f"{type(exc).__name__}: {exc}"))
        finally:
            events.put(None)

    threading.Thread(target=work, name="chat-stream", daemon=True).start()
    while (event := events.get()) is not None:
        yield event
