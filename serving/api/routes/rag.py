"""Knowledge base: ranked passages for a query across domains, and documents posted for indexing (202)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field, StringConstraints

from conveyor import gateway, knowledge, lineage
from conveyor.lineage import Lineage
from flows.index_documents import index_documents
from serving import runs
from serving.api.deps import CurrentUser, SettingsDep

router = APIRouter(prefix="/rag", tags=["rag"])
Domain = Annotated[str, StringConstraints(pattern=knowledge.DOMAIN_PATTERN.pattern)]


class QueryRequest(BaseModel):
    query: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
    domains: list[Domain] | None = Field(
        None, min_length=1, max_length=32, description="all domains when unset"
    )
    k: int = Field(10, ge=1, le=100)


class QueryResponse(BaseModel):
    query: str
    passages: list[gateway.Passage]
    failed_domains: list[gateway.DomainFailure] = Field(
        default_factory=list, description="domains that failed or timed out; passages come from the others"
    )
    lineage: Lineage = Field(description="The table versions read and the embedding model.")


class Document(BaseModel):
    id: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    text: Annotated[str, StringConstraints(min_length=1)]
    metadata: dict[str, Any] = Field(default_factory=dict)


class IndexRequest(BaseModel):
    domain: Domain
    documents: list[Document] = Field(min_length=1, max_length=2000)
    delete_missing: bool = Field(
        False, description="also delete the domain's documents absent from this post"
    )


@router.get("/domains")
def list_domains(_: CurrentUser) -> list[str]:
    """Knowledge domains that have an index."""
    return gateway.list_domains()


@router.post(
    "/query",
    responses={404: {"description": "unknown domain"}, 503: {"description": "no domain could be searched"}},
)
def query(body: QueryRequest, _: CurrentUser) -> QueryResponse:
    """Hybrid retrieval over the requested domains (or all), merged and ranked, with the table versions
    read; domains that failed or timed out are listed in `failed_domains` while the others answer."""
    try:
        found = gateway.retrieve(body.query, domains=body.domains, k=body.k)
    except gateway.UnknownDomainError as exc:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=str(exc)) from None
    except ValueError as exc:
        raise HTTPException(status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None
    except gateway.DomainsUnavailableError as exc:
        raise HTTPException(status_code=status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from None
    return QueryResponse(
        query=body.query,
        passages=found.passages,
        failed_domains=found.failed_domains,
        lineage=lineage.build(found.reads),
    )


@router.post("/documents", status_code=status.HTTP_202_ACCEPTED)
async def add_documents(body: IndexRequest, user: CurrentUser, settings: SettingsDep) -> runs.RunStarted:
    """Start `index-documents` for the posted documents; poll `GET /runs/{run_id}`."""
    parameters = {
        "domain": body.domain,
        "documents": [d.model_dump() for d in body.documents],
        "delete_missing": body.delete_missing,
    }
    tags = [f"api-user:{user.username}", f"domain:{body.domain}"]
    flow_run = await runs.start_served_or_local(index_documents, parameters, settings.work_pool, tags)
    return runs.RunStarted.of(flow_run, index_documents.name)
