"""What every agent shares: a typed request, a typed result, and its entry in the agent catalogue."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass

from pydantic import BaseModel, Field

from agents.llm import get_llm
from agents.sandbox import Figure
from conveyor.settings import LLMRole, get_settings


class AgentRequest(BaseModel):
    instruction: str = Field(min_length=1, max_length=20_000)
    context: str = Field("", description="Outputs of earlier steps the agent may use.")


class AgentResult(BaseModel):
    agent: str
    answer: str
    ok: bool = True
    sources: list[dict] = []
    figures: list[str] = Field([], description="PNG files written by the agent's code.")
    data: dict = Field({}, description="Computed values, code and other structured output.")
    error: str | None = None
    llm_unavailable: bool = Field(False, description="The LLM was down or timed out: the answer is degraded.")

    @classmethod
    def without_llm(cls, agent: str, exc: Exception, answer: str, **fields) -> AgentResult:
        """The failed result of an agent whose LLM call raised `exc` (what it has so far goes in `fields`)."""
        return cls(agent=agent, answer=answer, ok=False, error=str(exc), llm_unavailable=True, **fields)


@dataclass(frozen=True)
class Agent:
    name: LLMRole  # also the role its model plays (CONVEYOR_LLM_QUALITY_ROLES)
    description: str
    request: type[AgentRequest]
    run: Callable[..., AgentResult]
    streams: bool = False  # run() takes on_token= and reports tokens as they are generated

    def __call__(self, instruction: str, context: str = "", **fields) -> AgentResult:
        return self.run(self.request(instruction=instruction, context=context, **fields))


def generate(
    messages: list[dict], role: LLMRole, on_token: Callable[[str], None] | None = None, **options
) -> str:
    """The answer of `role`'s model to `messages`, each token also handed to `on_token` as it arrives."""
    tokens = []
    with closing(get_llm(role).stream(messages, **options)) as stream:  # frees the model if on_token raises
        for token in stream:
            tokens.append(token)
            if on_token:
                on_token(token)
    return "".join(tokens)


def save_figures(figures: list[Figure]) -> list[str]:
    """Keep sandbox figures as files under the state folder; returns their paths."""
    folder = get_settings().state_dir / "agent-outputs" / uuid.uuid4().hex[:12]
    folder.mkdir(parents=True, exist_ok=True)
    return [str(figure.save(folder)) for figure in figures]
