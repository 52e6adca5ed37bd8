"""Prefect tasks: one job each, typed inputs, small references out."""

import conveyor  # noqa: F401  (offline/telemetry switches and PREFECT_HOME before prefect loads)
