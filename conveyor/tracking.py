"""The one door to MLflow: tracking URI, experiments, runs tagged with their Prefect and git provenance."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from conveyor.settings import ConfigurationError, get_settings


def _configured_uri(uri: str) -> str:
    """Point MLflow's fluent API at `uri` (again, if something else moved it)."""
    if mlflow.get_tracking_uri() != uri:
        mlflow.set_tracking_uri(uri)
    if uri.startswith("sqlite:///"):
        get_settings().artifact_root.mkdir(parents=True, exist_ok=True)
    return uri


def client() -> MlflowClient:
    """An MLflow client on the configured tracking URI."""
    return MlflowClient(tracking_uri=_configured_uri(get_settings().tracking_uri))


def check_reachable() -> str:
    """Fail with a message naming the setting when the tracking store can't be used."""
    uri = get_settings().tracking_uri
    try:
        client().search_experiments(max_results=1)
    except Exception as exc:  # MLflow raises many types for a bad store
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigurationError(
            f"CONVEYOR_MLFLOW_TRACKING_URI={uri!r} is not reachable: {first_line}"
        ) from None
    return uri


def experiment_id(name: str) -> str:
    """Get or create an experiment whose artifacts live under the state folder (for SQLite stores)."""
    mlflow_client = client()
    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if get_settings().tracking_uri.startswith("sqlite:"):
        location = (get_settings().artifact_root / name).as_uri()
    return mlflow_client.create_experiment(name, artifact_location=location)


def provenance_tags() -> dict[str, str]:
    """Prefect flow run, deployment and git commit of the current process, where known."""
    from prefect.runtime import deployment, flow_run

    tags = {"conveyor.git_commit": git_commit()}
    if flow_run.id:
        tags |= {"prefect.flow_run_id": str(flow_run.id), "prefect.flow_name": str(flow_run.flow_name)}
    if deployment.id:
        tags["prefect.deployment_id"] = str(deployment.id)
    return {k: v for k, v in tags.items() if v}


@cache
def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


@contextmanager
def start_run(
    experiment: str,
    run_name: str | None = None,
    tags: dict[str, Any] | None = None,
    run_id: str | None = None,
) -> Iterator[Any]:
    """An MLflow run in `experiment` (or the existing `run_id`, resumed), tagged with provenance;
    marked FAILED if the body raises."""
    _configured_uri(get_settings().tracking_uri)
    all_tags = provenance_tags() | {k: str(v) for k, v in (tags or {}).items()}
    with mlflow.start_run(
        run_id=run_id, experiment_id=experiment_id(experiment), run_name=run_name, tags=all_tags
    ) as run:
        yield run


@contextmanager
def use_run(run_id: str) -> Iterator[Any]:
    """Make `run_id` the active run for fluent logging: the current one if it is active, else resumed."""
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        yield active
        return
    _configured_uri(get_settings().tracking_uri)
    with mlflow.start_run(run_id=run_id) as run:
        yield run
