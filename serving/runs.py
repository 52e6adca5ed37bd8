"""Prefect flow runs for the API: deployment runs where a worker serves them, else local background runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from typing import Any
from uuid import UUID

from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName
from prefect.client.schemas.objects import FlowRun, WorkPoolStatus
from prefect.client.schemas.responses import DeploymentResponse
from prefect.deployments import arun_deployment
from prefect.exceptions import ObjectNotFound
from prefect.utilities.schema_tools import ValidationError, validate
from pydantic import BaseModel

from conveyor.settings import get_settings

SUMMARY_CHARS = 4000


class NotDeployed(LookupError):
    """No deployment exists for the flow."""


class ParameterError(ValueError):
    """Parameters do not match the deployment's schema."""


class RunInfo(BaseModel):
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
    tags: list[str]
    result: Any = None


class RunStarted(BaseModel):
    run_id: str
    flow_name: str
    state: str
    deployment_id: str | None = None

    @classmethod
    def of(cls, flow_run: FlowRun, flow_name: str) -> RunStarted:
        return cls(
            run_id=str(flow_run.id),
            flow_name=flow_name,
            state=flow_run.state.type.value if flow_run.state else "SCHEDULED",
            deployment_id=str(flow_run.deployment_id) if flow_run.deployment_id else None,
        )


class DeploymentInfo(BaseModel):
    flow_name: str
    name: str
    work_pool: str | None
    parameters_schema: dict[str, Any]


async def deployments(flow_name: str | None = None) -> list[DeploymentInfo]:
    """Deployments (of one flow, or all) with their parameter schemas."""
    async with get_client() as client:
        found = await _deployments(client, flow_name)
        names = {f.id: f.name for f in await client.read_flows()} if found else {}
    return [
        DeploymentInfo(
            flow_name=names.get(d.flow_id, "?"),
            name=d.name,
            work_pool=d.work_pool_name,
            parameters_schema=d.parameter_openapi_schema or {},
        )
        for d in found
    ]


async def _deployments(client, flow_name: str | None) -> list[DeploymentResponse]:
    flow_filter = FlowFilter(name=FlowFilterName(any_=[flow_name])) if flow_name else None
    return await client.read_deployments(flow_filter=flow_filter)


def _pick(found: list[DeploymentResponse], work_pool: str) -> DeploymentResponse | None:
    """The deployment on the configured work pool, else the first one."""
    return next((d for d in found if d.work_pool_name == work_pool), found[0] if found else None)


async def start_deployed(
    flow_name: str, parameters: dict[str, Any], work_pool: str, tags: list[str]
) -> FlowRun:
    """Start a deployment run of `flow_name` after validating `parameters` against its schema."""
    async with get_client() as client:
        deployment = _pick(await _deployments(client, flow_name), work_pool)
    if deployment is None:
        raise NotDeployed(f"flow {flow_name!r} has no deployment (see GET /flows)")
    return await _run_deployment(flow_name, deployment, parameters, tags)


async def _run_deployment(
    flow_name: str, deployment: DeploymentResponse, parameters: dict[str, Any], tags: list[str]
) -> FlowRun:
    try:
        validate(parameters, deployment.parameter_openapi_schema or {}, raise_on_error=True)
    except ValidationError as exc:
        raise ParameterError(f"{flow_name}/{deployment.name}: {exc}") from None
    return await arun_deployment(deployment.id, parameters=parameters, timeout=0, tags=tags, as_subflow=False)


async def start_served_or_local(
    flow: Flow, parameters: dict[str, Any], work_pool: str, tags: list[str]
) -> FlowRun:
    """A deployment run when a worker is polling the deployment's pool, else a local run in the background."""
    async with get_client() as client:
        deployment = _pick(await _deployments(client, flow.name), work_pool)
        if deployment is not None and not await _pool_is_served(client, deployment.work_pool_name):
            deployment = None  # no worker would pick the run up
    if deployment is None:
        return await _start_local(flow, parameters, tags)
    return await _run_deployment(flow.name, deployment, parameters, tags)


async def _pool_is_served(client, pool_name: str | None) -> bool:
    if not pool_name:
        return False
    try:
        pool = await client.read_work_pool(pool_name)
    except ObjectNotFound:
        return False
    return pool.status == WorkPoolStatus.READY


async def _start_local(flow: Flow, parameters: dict[str, Any], tags: list[str]) -> FlowRun:
    """Create the run (its id goes back to the caller), then execute it in a process of its own.

    Prefect's engine (`python -m prefect.engine`) runs it apart from the API, the way a worker would, so
    stopping or restarting the API neither loses the run nor leaves it Running. Output: state/flow-runs/.
    """
    async with get_client() as client:
        flow_run = await client.create_flow_run(flow, parameters=parameters, tags=tags)
        api_url = str(client.api_url)
    logs = get_settings().state_dir / "flow-runs"
    logs.mkdir(parents=True, exist_ok=True)
    env = os.environ | {
        "PREFECT_API_URL": api_url,
        "PREFECT__FLOW_ENTRYPOINT": f"{flow.fn.__module__}:{flow.fn.__name__}",
    }
    with (logs / f"{flow_run.id}.log").open("ab") as output:
        subprocess.Popen(
            [sys.executable, "-m", "prefect.engine", str(flow_run.id)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # not in the API's process group: a Ctrl-C of the API spares it
        )
    return flow_run


async def read_run(run_id: UUID) -> RunInfo:
    """State of a flow run and, once it completed, a short summary of its result."""
    async with get_client() as client:
        try:
            flow_run = await client.read_flow_run(run_id)
        except ObjectNotFound:
            raise LookupError(f"no flow run {run_id}") from None
        flow = await client.read_flow(flow_run.flow_id)
    state = flow_run.state
    return RunInfo(
        id=str(flow_run.id),
        name=flow_run.name,
        flow_name=flow.name,
        deployment_id=str(flow_run.deployment_id) if flow_run.deployment_id else None,
        state=state.type.value if state else "PENDING",
        state_name=state.name if state else "Pending",
        message=state.message if state else None,
        created=flow_run.created,
        start_time=flow_run.start_time,
        end_time=flow_run.end_time,
        tags=list(flow_run.tags),
        result=await _result_summary(flow_run),
    )


async def _result_summary(flow_run: FlowRun) -> Any:
    """The completed run's result as JSON (cut to a preview when large); None before completion."""
    if flow_run.state is None or not flow_run.state.is_completed():
        return None
    try:
        result = await flow_run.state.aresult(raise_on_failure=False)
    except Exception as exc:  # result storage may live on another machine
        return {"unavailable": f"{type(exc).__name__}: {exc}"[:300]}
    if isinstance(result, BaseModel):
        result = result.model_dump(mode="json")
    text = json.dumps(result, default=str)
    return (
        json.loads(text)
        if len(text) <= SUMMARY_CHARS
        else {"preview": text[:SUMMARY_CHARS], "truncated": True}
    )
