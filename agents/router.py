"""Router: sends a chat message to one agent (constrained JSON, keyword rules as check and fallback)."""

from __future__ import annotations

import re
import time
from typing import Literal

from pydantic import BaseModel, create_model

from agents.catalog import AGENTS, agent_name_type
from agents.llm import LLMUnavailable, StructuredOutputError, get_llm

DEFAULT_AGENT = "research"
KEYWORDS = {
    "data": r"\.csv\b|\bdataset|\bcolumns?\b|\brows?\b|\baverage|\bmean\b|\bmedian|\btotal|\bstatistic|"
    r"\bcorrelat|\bdistribution|\bsales\b|\brevenue|\bper (region|month|product|category)",
    "code": r"\bcode\b|\bfunction|\bscript|\bpython\b|\bimplement|\bregex|\bclass\b|\bdef\b|\bbug\b|"
    r"\btraceback|\bexception|\bunit tests?\b|\brefactor|\bsnippet",
    "summary": r"\bsummar|\btl;?dr|\bshorten|\bcondense|\bkey points|\bin (brief|short)|\bgist\b|\brecap",
}


# Worked examples shown to the model (none of them is in router_cases.jsonl, the evaluation set).
EXAMPLES = [
    ("Which Python module parses command-line arguments?", "research"),
    ("What is the median units value per product in sales_2024.csv?", "data"),
    ("Write a function that returns the n-th Fibonacci number", "code"),
    ("Summarize this: the release adds dark mode, fixes two crashes and drops Python 3.8.", "summary"),
    ("How does Conveyor track experiments?", "research"),
    ("Histogram of radius_mean in breast_cancer.csv", "data"),
]


class Route(BaseModel):
    agent: str
    method: Literal["llm", "llm+keywords", "keywords"]
    latency_s: float
    model_choice: str | None = None
    error: str | None = None


def keyword_counts(message: str) -> dict[str, int]:
    return {agent: len(re.findall(pattern, message, re.IGNORECASE)) for agent, pattern in KEYWORDS.items()}


def keyword_route(message: str) -> str:
    """Deterministic fallback: the agent whose keywords occur most often (research when none do)."""
    counts = keyword_counts(message)
    best = max(counts, key=lambda a: counts[a])
    return best if counts[best] else DEFAULT_AGENT


class AgentChoice(BaseModel):
    """The router's structured reply; `_choice_schema` narrows `agent` to the registered names."""

    agent: str


def _choice_schema() -> type[AgentChoice]:
    return create_model("AgentChoice", __base__=AgentChoice, agent=(agent_name_type(), ...))


def route_prompt(message: str) -> list[dict]:
    catalogue = "\n".join(f"- {name}: {agent.description}" for name, agent in AGENTS.items())
    messages = [{"role": "system", "content": f"Route each message to one agent. Agents:\n{catalogue}"}]
    for example, agent in EXAMPLES:
        messages += [
            {"role": "user", "content": example},
            {"role": "assistant", "content": f'{{"agent": "{agent}"}}'},
        ]
    return [*messages, {"role": "user", "content": message[:2000]}]


def route(message: str) -> Route:
    """Classify `message` to an agent name.

    The model's choice stands unless the message has keywords of other agents and none of its own (the
    code-tuned model over-picks "code"); when the model fails, keyword rules decide.
    """
    started = time.perf_counter()
    try:
        choice = get_llm().structured(route_prompt(message), _choice_schema(), max_tokens=20).agent
    except (LLMUnavailable, StructuredOutputError) as exc:
        return Route(
            agent=keyword_route(message),
            method="keywords",
            latency_s=time.perf_counter() - started,
            error=str(exc),
        )
    counts = keyword_counts(message)
    if counts.get(choice, 0) == 0 and any(counts.values()):
        return Route(
            agent=keyword_route(message),
            method="llm+keywords",
            model_choice=choice,
            latency_s=time.perf_counter() - started,
        )
    return Route(agent=choice, method="llm", model_choice=choice, latency_s=time.perf_counter() - started)
