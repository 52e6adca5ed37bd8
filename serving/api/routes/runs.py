"""Flow runs started through the API (or anywhere): recent runs, one run's state, result and logs."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query, status

from serving import runs
from serving.api.deps import CurrentUser

router = APIRouter(prefix="/runs", tags=["flows"])
FlowName = Annotated[str | None, Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")]


@router.get("")
async def list_runs(
    _: CurrentUser, limit: Annotated[int, Query(ge=1, le=200)] = 20, flow_name: FlowName = None
) -> list[runs.RunSummary]:
    """The latest flow runs, newest first: state, duration and Prefect UI page."""
    return await runs.recent_runs(limit, flow_name)


@router.get("/{run_id}", responses={404: {"description": "no such flow run"}})
async def read_run(run_id: UUID, _: CurrentUser) -> runs.RunInfo:
    """State of a Prefect flow run and a summary of its result when completed."""
    try:
        return await runs.read_run(run_id)
    except LookupError as exc:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=str(exc)) from None


@router.get("/{run_id}/logs", responses={404: {"description": "no such flow run"}})
async def read_logs(
    run_id: UUID,
    _: CurrentUser,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 200,
) -> runs.RunLogs:
    """A page of the run's log lines, oldest first; ask again from `next_offset` for newer ones."""
    try:
        return await runs.read_logs(run_id, offset, limit)
    except LookupError as exc:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=str(exc)) from None
