"""Probes and metrics: `/health` (process up), `/ready` (stores and model reachable), `/metrics`."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

import httpx
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from conveyor.settings import Settings
from serving.api.deps import CurrentUser
from serving.api.errors import redact
from serving.core.concurrency import call_blocking

router = APIRouter(tags=["health"])
CHECK_TIMEOUT_S = 20.0
LLM_PROBE_TIMEOUT_S = 5.0


def _check_database(request: Request) -> None:
    with request.app.state.sessionmaker() as session:
        session.execute(text("SELECT 1"))


def _check_tracking() -> None:
    from conveyor import tracking

    tracking.check_reachable()


def _check_knowledge() -> None:
    from conveyor import knowledge

    knowledge.connect().list_tables()


def check_llm(settings: Settings) -> None:
    """The embedded model is loaded, or the remote endpoint lists its models (nothing is generated)."""
    if settings.llm_backend == "embedded" or not settings.llm_base_url:
        from agents.llm import get_llm

        get_llm()  # the embedded model is verified and loaded here; a missing endpoint setting is named
        return
    key = settings.llm_api_key
    headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}
    url = settings.llm_base_url.rstrip("/") + "/models"
    try:
        response = httpx.get(url, headers=headers, timeout=LLM_PROBE_TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise RuntimeError(f"LLM endpoint {url} unreachable: {type(exc).__name__} {exc}") from None
    if response.status_code != 200:
        raise RuntimeError(f"LLM endpoint {url} answered HTTP {response.status_code}")


def _check_rate_limits(request: Request) -> None:
    if not request.app.state.limits.storage.check():
        raise RuntimeError("the rate-limit store does not answer")


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


class CachedCheck:
    """A check's answer reused for `ttl_s` seconds; probes arriving meanwhile share one call."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._lock = asyncio.Lock()
        self._answer = ""
        self._checked_at = -math.inf

    async def __call__(self, check: Callable[[], None]) -> str:
        async with self._lock:
            if time.monotonic() - self._checked_at >= self.ttl_s:
                self._answer = await _run_check(check)
                self._checked_at = time.monotonic()
            return self._answer


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is up and its event loop answers."""
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "a store or the model is unreachable"}})
async def ready(request: Request) -> JSONResponse:
    """Each store and the model is reachable: database, rate-limit store, MLflow, LanceDB, Prefect API, LLM.

    The model's answer (its model list for a remote endpoint) is reused for `CONVEYOR_API_READY_CACHE_S`."""
    settings: Settings = request.app.state.settings
    checks = {
        "database": _run_check(lambda: _check_database(request)),
        "rate_limits": _run_check(lambda: _check_rate_limits(request)),
        "tracking": _run_check(_check_tracking),
        "knowledge": _run_check(_check_knowledge),
        "orchestration": _run_check(_check_orchestration),
        "llm": request.app.state.llm_readiness(lambda: check_llm(settings)),
    }
    results = await asyncio.gather(*checks.values())
    report = dict(zip(checks, results, strict=True))
    is_ready = all(r == "ok" for r in results)
    body = {"status": "ready" if is_ready else "not ready", "checks": report}
    return JSONResponse(body, status_code=200 if is_ready else 503)


@router.get("/metrics", response_class=Response)
def prometheus_metrics(_: CurrentUser) -> Response:
    """Prometheus text: requests, latencies, errors, streamed tokens, LLM queue depth."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
