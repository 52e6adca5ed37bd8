"""Agents: LLM backends, the sandbox, specialised agents, a router, a planning meta-agent and memory."""
