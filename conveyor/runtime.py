"""Process environment: offline model loading, telemetry off, thread counts, this environment's tools.

`configure()` is for process entry points (the CLI, the API app, `flows`, `bench`, DVC stages, the tests),
called before prefect, transformers or huggingface_hub are imported: they read these variables on import.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path

from conveyor.settings import ConfigurationError, get_settings

SCRIPTS = Path(sys.executable).parent  # this environment's console scripts: dvc, flwr, flower-superlink, ...

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
    """Offline/telemetry switches, and Prefect's home and API from the settings; a set variable wins."""
    for name, value in OFFLINE_AND_QUIET.items():
        os.environ.setdefault(name, value)
    # Where setuptools is installed (the images' venvs), importing its deprecated pkg_resources warns.
    warnings.filterwarnings("ignore", message=".*pkg_resources.*")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # MLflow's migrations log every step at INFO
    try:
        settings = get_settings()
    except ConfigurationError:
        return  # the entry point's own get_settings() reports the bad setting
    os.environ.setdefault("PREFECT_HOME", str(settings.prefect_home))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    if settings.prefect_api_url:
        os.environ.setdefault("PREFECT_API_URL", settings.prefect_api_url)


def with_tools(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with this environment's scripts first on PATH, for a child that starts them by name
    (DVC stage commands' `python`, the SuperLink's `flower-superexec`)."""
    return {**env, "PATH": f"{SCRIPTS}{os.pathsep}{env.get('PATH', '')}"}


def limit_torch_threads(threads: int) -> None:
    """Pin torch to `threads` CPU threads: with 2 cores, more threads collapse throughput."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
