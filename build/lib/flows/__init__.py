"""Prefect flows: thin wiring of tasks into pipelines (each module is one flow)."""

import conveyor  # noqa: F401  (offline/telemetry switches and PREFECT_HOME before prefect loads)
