"""What the web app's dashboard shows beside runs and models: knowledge domains and the language model."""

from __future__ import annotations

from datetime import datetime
from typing import get_args
from uuid import UUID

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from pydantic import BaseModel, Field

from agents.llm import queue_depth
from conveyor import knowledge
from conveyor.settings import LLMRole, Settings
from serving import runs
from serving.api.deps import CurrentUser, SettingsDep
from serving.api.errors import redact
from serving.api.routes.health import check_llm

router = APIRouter(prefix="/dashboard", tags=["dashboard"])


class IndexRun(BaseModel):
    id: str
    state: str | None = Field(description="Null when Prefect no longer knows the run.")
    end_time: datetime | None = None
    ui_url: str | None


class DomainInfo(BaseModel):
    domain: str
    documents: int
    chunks: int
    version: int
    last_index_run: IndexRun | None = Field(description="The index run that wrote the current version.")


class LLMInfo(BaseModel):
    backend: str
    base_url: str | None
    models: dict[str, str] = Field(description="The model that plays each role.")
    health: str = Field(description="`ok`, or `error: ` and the reason (the /ready check, cached).")
    queue_depth: int = Field(description="Generations waiting for the model in this process.")


def _read_domains() -> list[tuple[str, int, int, int, str | None]]:
    found = []
    for domain in knowledge.list_domains():
        table = knowledge.open_domain(domain)
        if table is None:  # dropped meanwhile
            continue
        version = table.version
        documents = len(knowledge.document_hashes(domain))
        found.append((domain, documents, table.count_rows(), version, knowledge.index_run_id(table, version)))
    return found


@router.get("/domains")
async def list_domains(_: CurrentUser) -> list[DomainInfo]:
    """Each knowledge domain: documents, chunks, table version and the index run that wrote it."""
    found = await run_in_threadpool(_read_domains)
    run_ids = [UUID(run_id) for *_, run_id in found if run_id]
    known = {}
    if run_ids:
        async with get_client() as client:
            flow_runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=run_ids))
            )
        known = {str(r.id): r for r in flow_runs}
    domains = []
    for domain, documents, chunks, version, run_id in found:
        flow_run = known.get(run_id or "")
        last = None
        if run_id:
            last = IndexRun(
                id=run_id,
                state=flow_run.state.type.value if flow_run and flow_run.state else None,
                end_time=flow_run.end_time if flow_run else None,
                ui_url=runs.ui_url(run_id),
            )
        domains.append(
            DomainInfo(
                domain=domain, documents=documents, chunks=chunks, version=version, last_index_run=last
            )
        )
    return domains


def _models(settings: Settings) -> dict[str, str]:
    return {
        role: settings.llm_quality_model if role in settings.llm_quality_roles else settings.llm_model
        for role in get_args(LLMRole)
    }


@router.get("/llm")
async def llm(request: Request, _: CurrentUser, settings: SettingsDep) -> LLMInfo:
    """The language model in use per role, its backend and its health."""
    health = await request.app.state.llm_readiness(lambda: check_llm(settings))
    return LLMInfo(
        backend=settings.llm_backend,
        base_url=redact(settings.llm_base_url)
        if settings.llm_backend == "openai" and settings.llm_base_url
        else None,
        models=_models(settings),
        health=health,
        queue_depth=queue_depth(),
    )
