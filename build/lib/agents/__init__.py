"""Agents: LLM backends, the sandbox, specialised agents, a router, a planning meta-agent and memory."""

import conveyor  # noqa: F401  (offline/telemetry switches and PREFECT_HOME before prefect loads)
