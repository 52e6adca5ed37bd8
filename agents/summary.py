"""Summary agent: summarises text or earlier results within a word bound."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from pydantic import Field

from agents.base import Agent, AgentRequest, AgentResult, generate
from agents.llm import LLMUnavailable

NAME: Final = "summary"
SYSTEM = (
    "You summarise text faithfully and concisely. Keep the numbers that matter. Use at most {words} words."
)


class SummaryRequest(AgentRequest):
    max_words: int = Field(120, ge=10, le=1000)


def bound_words(text: str, max_words: int) -> str:
    """Cut `text` to `max_words`, ending at the last full sentence inside the bound when there is one."""
    words = text.split()
    if len(words) <= max_words:
        return text.strip()
    cut = " ".join(words[:max_words])
    end = max(cut.rfind(". "), cut.rfind(".\n"), cut.rfind("!"), cut.rfind("?"))
    return cut[: end + 1] if end > len(cut) // 2 else cut + " ..."


def summarise(request: SummaryRequest, on_token: Callable[[str], None] | None = None) -> AgentResult:
    """Summarise the instruction's text plus any earlier results, in at most `max_words` words."""
    text = f"{request.instruction}\n\n{request.context}".strip()[:12_000]
    messages = [
        {"role": "system", "content": SYSTEM.format(words=request.max_words)},
        {"role": "user", "content": f"Summarise:\n\n{text}"},
    ]
    try:
        text = generate(
            messages, "summary", on_token, max_tokens=int(request.max_words * 1.6) + 16, temperature=0.2
        )
    except LLMUnavailable as exc:
        return AgentResult.without_llm(NAME, exc, f"The language model is unavailable: {exc}")
    summary = bound_words(text, request.max_words)
    return AgentResult(
        agent=NAME, answer=summary, data={"words": len(summary.split()), "max_words": request.max_words}
    )


AGENT = Agent(
    name=NAME,
    description=(
        "Makes a given text shorter: summaries, key points, TL;DR of text in the message or earlier results. "
        "Example: 'Summarize this: ...'"
    ),
    request=SummaryRequest,
    run=summarise,
    streams=True,
)
