"""Prefect flow runs for the API: deployment runs where a worker serves them, else local background runs;
recent runs, one run's state, result and logs, with their Prefect UI pages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    LogFilter,
    LogFilterFlowRunId,
    TaskRunFilter,
    TaskRunFilterId,
)
from prefect.client.schemas.objects import DeploymentStatus, FlowRun, WorkPoolStatus
from prefect.client.schemas.responses import DeploymentResponse
from prefect.client.schemas.sorting import FlowRunSort, LogSort
from prefect.deployments import arun_deployment
from prefect.exceptions import ObjectNotFound
from prefect.utilities.schema_tools import ValidationError, validate
from pydantic import BaseModel, Field

from conveyor.settings import get_settings

SUMMARY_CHARS = 4000
REPO = Path(__file__).resolve().parent.parent


class NotDeployed(LookupError):
    """No deployment exists for the flow."""


class ParameterError(ValueError):
    """Parameters do not match the deployment's schema."""


class RunSummary(BaseModel):
    id: str
    name: str
    flow_name: str | None
    deployment_id: str | None
    state: str
    state_name: str
    message: str | None
    created: datetime | None
    start_time: datetime | None
    end_time: datetime | None
    duration_s: float | None = Field(description="Run time so far (or in all, once finished).")
    tags: list[str]
    ui_url: str | None = Field(description="The run's page in the Prefect UI.")


class RunInfo(RunSummary):
    parameters: Any = Field(None, description="The run's parameters (their start, when large).")
    result: Any = None


class RunStarted(BaseModel):
    run_id: str
    flow_name: str
    state: str
    deployment_id: str | None = None
    executor: str = Field(
        "worker", description="`worker` (its pool's) or `local` (a process of the API host)."
    )
    ui_url: str | None = None

    @classmethod
    def of(cls, flow_run: FlowRun, flow_name: str, executor: str = "worker") -> RunStarted:
        return cls(
            run_id=str(flow_run.id),
            flow_name=flow_name,
            state=flow_run.state.type.value if flow_run.state else "SCHEDULED",
            deployment_id=str(flow_run.deployment_id) if flow_run.deployment_id else None,
            executor=executor,
            ui_url=ui_url(flow_run.id),
        )


class DeploymentInfo(BaseModel):
    id: str
    flow_name: str
    name: str
    description: str | None = None
    work_pool: str | None
    parameters: dict[str, Any] = Field(default_factory=dict, description="The deployment's default values.")
    parameters_schema: dict[str, Any]
    served: bool = Field(description="A worker polls its pool (a runner serves it, without a pool) now.")


class LogLine(BaseModel):
    timestamp: datetime
    level: int
    logger: str
    task_run: str | None = Field(None, description="The task run that logged the line, if one did.")
    message: str


class RunLogs(BaseModel):
    run_id: str
    offset: int
    next_offset: int
    logs: list[LogLine]


def ui_url(run_id: UUID | str) -> str | None:
    """The flow run's Prefect UI page (PREFECT_UI_URL, else the `make up` server)."""
    from prefect.utilities.urls import url_for

    default = f"http://127.0.0.1:{get_settings().prefect_port}"
    return url_for("flow-run", obj_id=str(run_id), default_base_url=default)


async def deployments(flow_name: str | None = None) -> list[DeploymentInfo]:
    """Deployments (of one flow, or all) with their parameter schemas."""
    async with get_client() as client:
        found = await _deployments(client, flow_name)
        names = {f.id: f.name for f in await client.read_flows()} if found else {}
        served = [await _is_served(client, d) for d in found]
    return [
        DeploymentInfo(
            id=str(d.id),
            flow_name=names.get(d.flow_id, "?"),
            name=d.name,
            description=d.description,
            work_pool=d.work_pool_name,
            parameters=d.parameters or {},
            parameters_schema=d.parameter_openapi_schema or {},
            served=is_served,
        )
        for d, is_served in zip(found, served, strict=True)
    ]


async def _deployments(client, flow_name: str | None) -> list[DeploymentResponse]:
    flow_filter = FlowFilter(name=FlowFilterName(any_=[flow_name])) if flow_name else None
    return await client.read_deployments(flow_filter=flow_filter)


def _pick(found: list[DeploymentResponse], work_pool: str) -> DeploymentResponse | None:
    """The deployment on the configured work pool, else the first one."""
    return next((d for d in found if d.work_pool_name == work_pool), found[0] if found else None)


async def start_deployed(
    flow_name: str,
    parameters: dict[str, Any],
    work_pool: str,
    tags: list[str],
    deployment_name: str | None = None,
    local_if_unserved: bool = False,
) -> RunStarted:
    """Start a run of `flow_name`'s deployment (`deployment_name`, else the one on `work_pool`) after
    validating `parameters` against its schema: through its work pool (it waits there for a worker), or,
    with `local_if_unserved` and no worker serving that pool, at once in a local process (as
    `start_served_or_local` does)."""
    async with get_client() as client:
        found = await _deployments(client, flow_name)
        if deployment_name is not None:
            found = [d for d in found if d.name == deployment_name]
        deployment = _pick(found, work_pool)
        if deployment is None:
            named = f" named {deployment_name!r}" if deployment_name else ""
            raise NotDeployed(f"flow {flow_name!r} has no deployment{named} (see GET /flows)")
        _validate(flow_name, deployment, parameters)
        if not local_if_unserved or await _is_served(client, deployment):
            return RunStarted.of(await _run_deployment(deployment, parameters, tags), flow_name)
        flow_run = await client.create_flow_run_from_deployment(
            deployment.id, parameters=parameters, tags=tags
        )
        api_url = str(client.api_url)
    cwd = Path(deployment.path) if deployment.path and Path(deployment.path).is_dir() else REPO
    _execute(flow_run.id, api_url, _module_entrypoint(deployment.entrypoint or "", cwd), cwd)
    return RunStarted.of(flow_run, flow_name, executor="local")


def _validate(flow_name: str, deployment: DeploymentResponse, parameters: dict[str, Any]) -> None:
    try:
        validate(parameters, deployment.parameter_openapi_schema or {}, raise_on_error=True)
    except ValidationError as exc:
        raise ParameterError(f"{flow_name}/{deployment.name}: {exc}") from None


async def _run_deployment(
    deployment: DeploymentResponse, parameters: dict[str, Any], tags: list[str]
) -> FlowRun:
    return await arun_deployment(deployment.id, parameters=parameters, timeout=0, tags=tags, as_subflow=False)


async def start_served_or_local(
    flow: Flow, parameters: dict[str, Any], work_pool: str, tags: list[str]
) -> FlowRun:
    """A deployment run when a worker is polling the deployment's pool, else a local run in the background."""
    async with get_client() as client:
        deployment = _pick(await _deployments(client, flow.name), work_pool)
        if deployment is not None and not await _is_served(client, deployment):
            deployment = None  # no worker would pick the run up
    if deployment is None:
        return await _start_local(flow, parameters, tags)
    _validate(flow.name, deployment, parameters)
    return await _run_deployment(deployment, parameters, tags)


async def _is_served(client, deployment: DeploymentResponse) -> bool:
    """A worker polls the deployment's pool (or, without a pool, a runner serves the deployment)."""
    if not deployment.work_pool_name:
        return deployment.status == DeploymentStatus.READY
    try:
        pool = await client.read_work_pool(deployment.work_pool_name)
    except ObjectNotFound:
        return False
    return pool.status == WorkPoolStatus.READY


async def _start_local(flow: Flow, parameters: dict[str, Any], tags: list[str]) -> FlowRun:
    """Create the run (its id goes back to the caller), then execute it in a process of its own."""
    async with get_client() as client:
        flow_run = await client.create_flow_run(flow, parameters=parameters, tags=tags)
        api_url = str(client.api_url)
    _execute(flow_run.id, api_url, f"{flow.fn.__module__}:{flow.fn.__name__}", REPO)
    return flow_run


def _module_entrypoint(entrypoint: str, cwd: Path) -> str:
    """`flows/x.py:fn` as `flows.x:fn` when that file is importable from `cwd`: a flow loaded as a module
    pickles its results with classes the API can import (a script's module name is not importable)."""
    path, _, name = entrypoint.partition(":")
    parts = Path(path).parts
    if not path.endswith(".py") or Path(path).is_absolute() or ".." in parts or not (cwd / path).is_file():
        return entrypoint
    return f"{'.'.join(parts)[: -len('.py')]}:{name}"


def _execute(run_id: UUID, api_url: str, entrypoint: str, cwd: Path) -> None:
    """Run a created flow run with Prefect's engine (`python -m prefect.engine`) apart from the API, the way
    a worker would, so stopping or restarting the API neither loses the run nor leaves it Running.
    Output: state/flow-runs/."""
    logs = get_settings().state_dir / "flow-runs"
    logs.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"PREFECT_API_URL": api_url, "PREFECT__FLOW_ENTRYPOINT": entrypoint}
    with (logs / f"{run_id}.log").open("ab") as output:
        subprocess.Popen(
            [sys.executable, "-m", "prefect.engine", str(run_id)],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # not in the API's process group: a Ctrl-C of the API spares it
        )


def _summary(flow_run: FlowRun, flow_name: str | None) -> dict[str, Any]:
    state = flow_run.state
    running = flow_run.estimated_run_time or flow_run.total_run_time
    return {
        "id": str(flow_run.id),
        "name": flow_run.name,
        "flow_name": flow_name,
        "deployment_id": str(flow_run.deployment_id) if flow_run.deployment_id else None,
        "state": state.type.value if state else "PENDING",
        "state_name": state.name if state else "Pending",
        "message": state.message if state else None,
        "created": flow_run.created,
        "start_time": flow_run.start_time,
        "end_time": flow_run.end_time,
        "duration_s": running.total_seconds() if flow_run.start_time and running is not None else None,
        "tags": list(flow_run.tags),
        "ui_url": ui_url(flow_run.id),
    }


async def recent_runs(limit: int = 20, flow_name: str | None = None) -> list[RunSummary]:
    """The latest flow runs (newest expected start first; runs scheduled for later left out)."""
    soon = datetime.now(UTC) + timedelta(minutes=1)
    async with get_client() as client:
        found = await client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])) if flow_name else None,
            flow_run_filter=FlowRunFilter(expected_start_time=FlowRunFilterExpectedStartTime(before_=soon)),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            limit=limit,
        )
        names = {f.id: f.name for f in await client.read_flows()} if found else {}
    return [RunSummary(**_summary(run, names.get(run.flow_id))) for run in found]


async def read_run(run_id: UUID) -> RunInfo:
    """State of a flow run and, once it completed, a short summary of its result."""
    async with get_client() as client:
        try:
            flow_run = await client.read_flow_run(run_id)
        except ObjectNotFound:
            raise LookupError(f"no flow run {run_id}") from None
        flow = await client.read_flow(flow_run.flow_id)
    return RunInfo(
        **_summary(flow_run, flow.name),
        parameters=_preview(flow_run.parameters),
        result=await _result_summary(flow_run),
    )


async def read_logs(run_id: UUID, offset: int = 0, limit: int = 200) -> RunLogs:
    """A page of the run's log lines (its tasks' included), oldest first; poll again from `next_offset`."""
    async with get_client() as client:
        try:
            await client.read_flow_run(run_id)
        except ObjectNotFound:
            raise LookupError(f"no flow run {run_id}") from None
        found = await client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])),
            sort=LogSort.TIMESTAMP_ASC,
            offset=offset,
            limit=limit,
        )
        task_ids = list({g.task_run_id for g in found if g.task_run_id})
        tasks = (
            await client.read_task_runs(task_run_filter=TaskRunFilter(id=TaskRunFilterId(any_=task_ids)))
            if task_ids
            else []
        )
    names = {t.id: t.name for t in tasks}
    lines = [
        LogLine(
            timestamp=g.timestamp,
            level=g.level,
            logger=g.name,
            task_run=names.get(g.task_run_id) if g.task_run_id else None,
            message=g.message,
        )
        for g in found
    ]
    return RunLogs(run_id=str(run_id), offset=offset, next_offset=offset + len(lines), logs=lines)


async def _result_summary(flow_run: FlowRun) -> Any:
    """The completed run's result as JSON (cut to a preview when large); None before completion."""
    if flow_run.state is None or not flow_run.state.is_completed():
        return None
    try:
        result = await flow_run.state.aresult(raise_on_failure=False)
    except Exception as exc:  # result storage may live on another machine
        return {"unavailable": f"{type(exc).__name__}: {exc}"[:300]}
    return _preview(result.model_dump(mode="json") if isinstance(result, BaseModel) else result)


def _preview(value: Any) -> Any:
    """`value` as JSON, or the start of its text when large."""
    text = json.dumps(value, default=str)
    return (
        json.loads(text)
        if len(text) <= SUMMARY_CHARS
        else {"preview": text[:SUMMARY_CHARS], "truncated": True}
    )
