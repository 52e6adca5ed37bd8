"""Chat entry points for the API: route a message to an agent, answer whole or as a token stream."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel

from agents import memory
from agents.base import AgentResult
from agents.catalog import get_agent
from agents.llm import LLMUnavailable, identity
from agents.router import route
from conveyor import lineage, tracking
from conveyor.lineage import Lineage

log = logging.getLogger(__name__)
HISTORY_TURNS = 6


class ChatReply(BaseModel):
    answer: str
    agent: str
    sources: list[dict]
    run_id: str | None = None
    error: str | None = None  # why the agent failed, when it did (its answer then explains it)
    lineage: Lineage | None = None


class ChatUnavailable(LLMUnavailable):
    """The routed agent could not reach the LLM; `reply` keeps what it found without it (sources)."""

    def __init__(self, reply: ChatReply) -> None:
        super().__init__(reply.error or "no answer from the language model")
        self.reply = reply

    @property
    def found(self) -> dict:
        """What the client gets besides the reason: the agent and the sources it had retrieved."""
        return {"agent": self.reply.agent, "sources": self.reply.sources}


class ChatEvent(BaseModel):
    type: Literal["token", "final"]
    data: str | dict


def history_text(history: list[dict]) -> str:
    turns = history[-HISTORY_TURNS:]
    return "\n".join(f"{t.get('role', 'user')}: {str(t.get('content', ''))[:1000]}" for t in turns)


def _run(message: str, history: list[dict], on_token=None) -> ChatReply:
    """One answer, traced (a span for the route, the agent and within it each retrieval and LLM call) and
    with its lineage."""
    started = time.perf_counter()
    with tracking.trace_answer("chat", {"message": message}) as trace, lineage.recording() as reads:
        with tracking.span("route", "CHAIN", {"message": message}) as span:
            routed = route(message)
            span.set_outputs(routed.model_dump())
        agent = get_agent(routed.agent)
        context = history_text(history)
        with tracking.span(f"agent:{agent.name}", "AGENT", {"instruction": message}) as span:
            if agent.streams and on_token:
                result: AgentResult = agent.run(
                    agent.request(instruction=message, context=context), on_token=on_token
                )
            else:
                result = agent(message, context)
                if on_token:
                    on_token(result.answer)
            span.set_outputs({"ok": result.ok, "sources": len(result.sources), "error": result.error})
        trace.set_outputs({"agent": agent.name, "answer": result.answer})
    decision = lineage.RouteDecision(agent=routed.agent, method=routed.method, score=routed.score)
    answer_lineage = lineage.build(reads, llm=identity(agent.name), router=decision, trace_id=trace.trace_id)
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
    chat_reply = ChatReply(
        answer=result.answer,
        agent=agent.name,
        sources=result.sources,
        run_id=run_id,
        error=result.error,
        lineage=answer_lineage,
    )
    if result.llm_unavailable:
        raise ChatUnavailable(chat_reply)
    return chat_reply


def reply(message: str, history: list[dict]) -> ChatReply:
    """Route `message` to one agent and return its whole answer (history gives the conversation so far).

    Raises ChatUnavailable when the agent needed the LLM and could not reach it.
    """
    return _run(message, history)


def stream_reply(message: str, history: list[dict], emit: Callable[[ChatEvent], None]) -> None:
    """Emit tokens as the agent produces them, then one final event {agent, sources, answer, run_id, error}.

    Failures are raised (ChatUnavailable when the LLM is down). When `emit` raises (the listener went
    away), generation stops at that token.
    """
    reply = _run(message, history, lambda token: emit(ChatEvent(type="token", data=token)))
    emit(ChatEvent(type="final", data=reply.model_dump()))
