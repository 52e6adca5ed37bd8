"""Router: sends a chat message to one agent (grammar-constrained JSON, keyword fallback when the model fails)."""

from __future__ import annotations

import re
import time
from typing import Literal

from pydantic import BaseModel, create_model

from agents.llm import LLMUnavailable, StructuredOutputError, get_llm
from agents.registry import AGENTS

DEFAULT_AGENT = "research"
KEYWORDS = {
    "data": r"\.csv\b|\bdataset|\bcolumns?\b|\brows?\b|\baverage|\bmean\b|\bmedian|\btotal|\bstatistic|"
    r"\bcorrelat|\bdistribution|\bsales\b|\brevenue|\bper (region|month|product|category)",
    "code": r"\bcode\b|\bfunction|\bscript|\bpython\b|\bimplement|\bregex|\bclass\b|\bdef\b|\bbug\b|"
    r"\btraceback|\bexception|\bunit tests?\b|\brefactor|\bsnippet",
    "summary": r"\bsummar|\btl;?dr|\bshorten|\bcondense|\bkey points|\bin (brief|short)|\bgist\b|\brecap",
}


class Route(BaseModel):
    agent: str
    method: Literal["llm", "keywords"]
    latency_s: float
    error: str | None = None


def keyword_route(message: str) -> str:
    """Deterministic fallback: the agent whose keywords occur most often (research when none do)."""
    counts = {agent: len(re.findall(pattern, message, re.IGNORECASE)) for agent, pattern in KEYWORDS.items()}
    best = max(counts, key=lambda a: counts[a])
    return best if counts[best] else DEFAULT_AGENT


def _choice_schema() -> type[BaseModel]:
    return create_model("AgentChoice", agent=(Literal[tuple(AGENTS)], ...))


def route_prompt(message: str) -> list[dict]:
    catalogue = "\n".join(f"- {name}: {agent.description}" for name, agent in AGENTS.items())
    return [{"role": "system", "content": f"You are a router. Agents:\n{catalogue}"},
            {"role": "user", "content": f"Message: {message[:2000]}\n\nWhich one agent should handle this "
                                        f"message? Answer with JSON {{\"agent\": \"NAME\"}}."}]


def route(message: str) -> Route:
    """Classify `message` to an agent name; falls back to keyword rules if the model fails."""
    started = time.perf_counter()
    try:
        choice = get_llm().structured(route_prompt(message), _choice_schema(), max_tokens=20)
        return Route(agent=choice.agent, method="llm", latency_s=time.perf_counter() - started)
    except (LLMUnavailable, StructuredOutputError) as exc:
        return Route(
            agent=keyword_route(message),
            method="keywords",
            latency_s=time.perf_counter() - started,
            error=str(exc),
        )
