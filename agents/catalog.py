"""The agent catalogue: every agent a router or a plan can name, by name."""

from __future__ import annotations

from typing import Any, Literal

from agents import code, data, research, summary
from agents.base import Agent

AGENTS: dict[str, Agent] = {a.name: a for a in (research.AGENT, data.AGENT, code.AGENT, summary.AGENT)}


def agent_name_type() -> Any:
    """`Literal` of the agents' names, for schemas; built at runtime, so no static type (Any)."""
    return Literal[tuple(AGENTS)]


def get_agent(name: str) -> Agent:
    if name not in AGENTS:
        raise KeyError(f"unknown agent {name!r} (known: {', '.join(AGENTS)})")
    return AGENTS[name]
