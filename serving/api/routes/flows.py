"""Deployed flows: list them and start runs with validated parameters (202 + run id)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, status
from pydantic import BaseModel, Field

from serving import runs
from serving.api.deps import CurrentUser, SettingsDep

router = APIRouter(prefix="/flows", tags=["flows"])
FlowName = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")]


class RunRequest(BaseModel):
    parameters: dict[str, Any] = Field(default_factory=dict)
    deployment: str | None = Field(
        None,
        max_length=200,
        description="Which of the flow's deployments; default: the one on the work pool.",
    )
    local_if_unserved: bool = Field(
        False,
        description="When no worker serves the deployment's pool, run it now in a process on the API host "
        "(else the run waits in its pool for a worker).",
    )


@router.get("")
async def list_flows(_: CurrentUser) -> list[runs.DeploymentInfo]:
    """Deployments that can be started, with their default parameters and parameter schemas."""
    return await runs.deployments()


@router.post("/{name}/runs", status_code=status.HTTP_202_ACCEPTED, responses={404: {}, 422: {}})
async def start_flow_run(
    name: FlowName, body: RunRequest, user: CurrentUser, settings: SettingsDep
) -> runs.RunStarted:
    """Start a deployed flow (through its pool's worker, or here when asked and none serves it); poll
    `GET /runs/{run_id}` for its state and result, `GET /runs/{run_id}/logs` for its logs."""
    try:
        return await runs.start_deployed(
            name,
            body.parameters,
            settings.work_pool,
            [f"api-user:{user.username}"],
            body.deployment,
            body.local_if_unserved,
        )
    except runs.NotDeployed as exc:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=str(exc)) from None
    except runs.ParameterError as exc:
        raise HTTPException(status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None
