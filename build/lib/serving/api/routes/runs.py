"""Flow runs started through the API (or anywhere): state and, once finished, a result summary."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, HTTPException, status

from serving import runs
from serving.api.deps import CurrentUser

router = APIRouter(prefix="/runs", tags=["flows"])


@router.get("/{run_id}")
async def read_run(run_id: UUID, _: CurrentUser) -> runs.RunInfo:
    """State of a Prefect flow run and a summary of its result when completed."""
    try:
        return await runs.read_run(run_id)
    except LookupError as exc:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=str(exc)) from None
