"""Prefect flows: thin wiring of tasks into pipelines (each module is one flow).

The orchestration entry package (`python -m flows.<name>`, the platform flow, the benchmarks' flows):
importing it applies the process switches before prefect loads.
"""

from conveyor import runtime

runtime.configure()
