"""Conveyor chat API (FastAPI)."""

import conveyor  # noqa: F401  (offline/telemetry switches and PREFECT_HOME before prefect loads)
