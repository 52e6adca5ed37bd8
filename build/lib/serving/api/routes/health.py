"""Probes and metrics: `/health` (process up), `/ready` (stores and model reachable), `/metrics`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from serving.api.deps import CurrentUser
from serving.api.errors import redact
from serving.core.concurrency import call_blocking

router = APIRouter(tags=["health"])
CHECK_TIMEOUT_S = 20.0


def _check_database(request: Request) -> None:
    with request.app.state.sessionmaker() as session:
        session.execute(text("SELECT 1"))


def _check_tracking() -> None:
    from conveyor import tracking

    tracking.check_reachable()


def _check_knowledge() -> None:
    from conveyor import knowledge

    knowledge.connect().list_tables()


def _check_llm() -> None:
    from agents.llm import EmbeddedLLM, get_llm

    llm = get_llm()  # the embedded model is verified and loaded here
    if not isinstance(llm, EmbeddedLLM):  # a remote endpoint must prove it answers
        llm.complete([{"role": "user", "content": "ping"}], max_tokens=1)


def _check_orchestration() -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        error = client.api_healthcheck()
    if error is not None:
        raise error


async def _run_check(check: Callable[[], None]) -> str:
    try:
        await call_blocking(check, timeout=CHECK_TIMEOUT_S)
    except Exception as exc:  # any failure makes the service not ready; the reason is reported
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return "error: " + redact(reason)[:300]
    return "ok"


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is up and its event loop answers."""
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "a store or the model is unreachable"}})
async def ready(request: Request) -> JSONResponse:
    """Each store and the model is reachable: database, MLflow, LanceDB, Prefect API, LLM."""
    checks = {
        "database": lambda: _check_database(request),
        "tracking": _check_tracking,
        "knowledge": _check_knowledge,
        "orchestration": _check_orchestration,
        "llm": _check_llm,
    }
    results = await asyncio.gather(*(_run_check(check) for check in checks.values()))
    report = dict(zip(checks, results, strict=True))
    is_ready = all(r == "ok" for r in results)
    body = {"status": "ready" if is_ready else "not ready", "checks": report}
    return JSONResponse(body, status_code=200 if is_ready else 503)


@router.get("/metrics", response_class=Response)
def prometheus_metrics(_: CurrentUser) -> Response:
    """Prometheus text: requests, latencies, errors, streamed tokens, LLM queue depth."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
