"""Where a flow's mapped tasks run: this process's threads, or a Dask cluster beyond one machine."""

from __future__ import annotations

from typing import Any

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from conveyor.settings import ConfigurationError, Settings, get_settings


def task_runner(settings: Settings | None = None) -> TaskRunner[Any]:
    """The runner `CONVEYOR_TASK_RUNNER` names: `threads` (Prefect's thread pool) or `dask` (prefect-dask:
    the scheduler at `CONVEYOR_DASK_ADDRESS`, else a `CONVEYOR_DASK_CLUSTER_CLASS` cluster for each flow run,
    e.g. `distributed.LocalCluster` or `dask_kubernetes.operator.KubeCluster`)."""
    if settings is None:
        try:
            settings = get_settings()
        except ConfigurationError:
            # Flows pick their runner when imported; a bad setting is reported by the entry point's
            # preflight (or the run's first step) with its name, not as an import traceback.
            return ThreadPoolTaskRunner()
    if settings.task_runner == "threads":
        return ThreadPoolTaskRunner()
    from prefect_dask import DaskTaskRunner

    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address)
    return DaskTaskRunner(
        cluster_class=settings.dask_cluster_class, cluster_kwargs=settings.dask_cluster_kwargs
    )
