"""Process environment: offline model loading, telemetry off, thread counts. Call before heavy imports."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

OFFLINE_AND_QUIET = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_UI_ENABLED": "true",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "GIT_PYTHON_REFRESH": "quiet",
}


def configure() -> None:
    """Set offline/telemetry switches and Prefect's home/API (never overriding the caller's); quiet noise."""
    for name, value in OFFLINE_AND_QUIET.items():
        os.environ.setdefault(name, value)
    # Child processes (DVC stages, Flower, torchrun) run this environment's `python` and tools.
    scripts = str(Path(sys.executable).parent)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != scripts:
        os.environ["PATH"] = f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}"
    home = Path(os.environ.get("CONVEYOR_HOME", ".conveyor")).resolve()
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    if os.environ.get("CONVEYOR_PREFECT_API_URL"):
        os.environ.setdefault("PREFECT_API_URL", os.environ["CONVEYOR_PREFECT_API_URL"])
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*pkg_resources.*")
    logging.getLogger("alembic").setLevel(logging.WARNING)


def limit_torch_threads(threads: int) -> None:
    """Pin torch to `threads` CPU threads: with 2 cores, more threads collapse throughput."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
